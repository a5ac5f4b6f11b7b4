"""Logistic-regression baselines on TF-IDF features: Spark MLlib (any size) or scikit-learn (driver).

Inputs are Spark DataFrames with ``review_id, label (0..4), weight, features (vector)``
(encode/<tag>/features). Both engines fit a multinomial (softmax) model with an intercept and
per-row weights, so with the same weights and matched regularisation they agree:

- scikit-learn minimises  C·Σ wᵢ·lossᵢ + ½‖β‖²
- MLlib minimises         Σ wᵢ·lossᵢ / Σ wᵢ + regParam·((1−α)/2·‖β‖² + α‖β‖₁)

so regParam = 1 / (C · Σ wᵢ) with α = 0 is the same objective (``mllib_reg_for_C``; what
train-lr uses when lr.reg_param is null, the default). MLlib's
``standardization`` is off: TF-IDF rows are already L2-normalised, and standardising would make
regParam penalise rare n-grams far more than scikit-learn's C does.

The study's ``class_weight='balanced'`` is expressed as row weights (n / (5 · n_class) times the
row's own weight), which is what scikit-learn does internally; MLlib gets the same via weightCol.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

N_CLASSES = 5
FIT_WEIGHT = "fit_weight"


# --------------------------------------------------------------------------- weights
def with_fit_weight(features: DataFrame, class_weights: Mapping[int, float] | None) -> DataFrame:
    """Add fit_weight = weight × class_weights[label] (or = weight when class_weights is None)."""
    if class_weights is None:
        factor = F.lit(1.0)
    else:
        pairs = [x for k, w in sorted(class_weights.items()) for x in (F.lit(int(k)), F.lit(float(w)))]
        factor = F.create_map(*pairs)[F.col("label")]
    return features.withColumn(FIT_WEIGHT, F.col("weight").cast("double") * factor)


def mllib_reg_for_C(C: float, total_weight: float) -> float:
    """MLlib regParam giving scikit-learn's objective for inverse regularisation C."""
    if C <= 0 or total_weight <= 0:
        raise ValueError(f"mllib_reg_for_C: need C > 0 and total weight > 0, got {C}, {total_weight}")
    return 1.0 / (C * total_weight)


# MLlib LogisticRegression's default tol: a last relative objective change below it counts as
# converged even when the optimizer used every iteration.
CONVERGED_CHANGE = 1e-6


def convergence(iterations: int, max_iter: int, objective_history: list[float] | None) -> dict:
    """How a fit ended: {iterations, converged, objective_change (the relative change of the
    objective over the last iteration; None when the engine does not report its history, as
    scikit-learn's lbfgs)}. converged: stopped before max_iter, or the last change is below
    CONVERGED_CHANGE."""
    change = None
    if objective_history and len(objective_history) >= 2:
        prev, last = float(objective_history[-2]), float(objective_history[-1])
        change = abs(last - prev) / max(abs(prev), 1e-300)
    converged = int(iterations) < int(max_iter) or (change is not None
                                                    and change < CONVERGED_CHANGE)
    return {"iterations": int(iterations), "converged": converged, "objective_change": change}


# --------------------------------------------------------------------------- MLlib
def fit_mllib(train: DataFrame, reg_param: float, elastic_net: float, max_iter: int,
              weight_col: str = FIT_WEIGHT):
    """Fit a multinomial MLlib LogisticRegression on (features, label, weight_col)."""
    from pyspark.ml.classification import LogisticRegression
    estimator = LogisticRegression(featuresCol="features", labelCol="label", weightCol=weight_col,
                                   family="multinomial", regParam=reg_param,
                                   elasticNetParam=elastic_net, maxIter=max_iter,
                                   standardization=False, fitIntercept=True)
    return estimator.fit(train.withColumn("label", F.col("label").cast("double")))


def mllib_model_data(model) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A fitted multinomial MLlib model as (coefficients k×d, intercepts k, metadata): what
    model_store writes from the driver instead of Spark's writer, which ships the coefficient
    matrix inside one task (a one-row DataFrame of a local Seq: 40 MB at 2^20 features)."""
    coef = np.asarray(model.coefficientMatrix.toArray(), dtype=np.float64)
    intercept = np.asarray(model.interceptVector.toArray(), dtype=np.float64)
    meta = {"uid": model.uid, "numClasses": int(model.numClasses),
            "numFeatures": int(model.numFeatures), "isMultinomial": True}
    return coef, intercept, meta


def mllib_model_from_data(coef: np.ndarray, intercept: np.ndarray, meta: dict[str, Any]):
    """The MLlib LogisticRegressionModel of mllib_model_data's parts, built in the JVM: the
    matrix and vector reach it pickled (pyspark.mllib's SerDe), as pyspark passes them."""
    from pyspark import SparkContext
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.mllib.common import _py2java
    from pyspark.mllib.linalg import DenseMatrix, DenseVector
    sc = SparkContext._active_spark_context
    k, d = coef.shape
    # DenseMatrix values are column-major
    jcoef = _py2java(sc, DenseMatrix(k, d, np.asarray(coef, dtype=np.float64).ravel(order="F")))
    jintercept = _py2java(sc, DenseVector(np.asarray(intercept, dtype=np.float64)))
    jmodel = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        str(meta["uid"]), jcoef.asML(), jintercept.asML(), int(k), True)
    return LogisticRegressionModel._from_java(jmodel)


def dense_mllib_model(model):
    """The model with its coefficients in a dense matrix (itself when they already are).

    Spark stores a fitted model's coefficients compressed: a SparseMatrix when most of them are
    0, as with 2^20 hashed features (every feature no train row has keeps a 0 coefficient), and
    its predict multiplies each row by that matrix by walking all of the matrix's non-zeros: the
    cost per row grows with the model, not with the row. Measured: 530 s to score 49k
    validation rows (11 ms per row) with a fitted 2^20 model in the 1M-row scale bench, against
    seconds dense; on a synthetic 5 × 2^20 model with 200k non-zeros per class, 5,000 rows
    took 15.6 s sparse and 3.7 s dense (docs/scale.md). Dense costs 40 MB of doubles at 2^20."""
    from pyspark.ml.linalg import DenseMatrix
    if isinstance(model.coefficientMatrix, DenseMatrix):
        return model
    return mllib_model_from_data(*mllib_model_data(model))


def predict_mllib(model, features: DataFrame) -> DataFrame:
    """features → review_id, label, pred (int 0..4), proba array<double>[5] (lazy)."""
    from pyspark.ml.functions import vector_to_array
    scored = model.transform(features.select("review_id", "label", "features"))
    return scored.select(
        F.col("review_id"), F.col("label").cast("int").alias("label"),
        F.col("prediction").cast("int").alias("pred"),
        vector_to_array(F.col("probability")).alias("proba"))


# --------------------------------------------------------------------------- scikit-learn
def collect_features(features: DataFrame, max_rows: int, key: str = "lr.sklearn_max_rows"):
    """Collect features to the driver → (review_ids, X csr_matrix, y int array, w float array).

    Raises ValueError naming `key` when there are more than max_rows rows.
    """
    import scipy.sparse as sp
    from pyspark.ml.linalg import SparseVector

    n_rows = features.count()
    if n_rows > max_rows:
        raise ValueError(f"{key}: scikit-learn collects the features to the driver and there "
                         f"are {n_rows} rows, more than the limit {max_rows}; raise {key} or use "
                         f"lr.engine=mllib")
    ids, labels, weights, indptr, indices, values = [], [], [], [0], [], []
    n_features = None
    weight = F.col("weight") if "weight" in features.columns else F.lit(1.0)
    for row in features.select("review_id", "label", weight.alias("weight"), "features").toLocalIterator():
        vec = row["features"]
        n_features = vec.size
        if isinstance(vec, SparseVector):
            indices.append(vec.indices)
            values.append(vec.values)
        else:
            dense = vec.toArray()
            nz = np.flatnonzero(dense)
            indices.append(nz)
            values.append(dense[nz])
        indptr.append(indptr[-1] + len(indices[-1]))
        ids.append(row["review_id"])
        labels.append(row["label"])
        weights.append(row["weight"])
    if not ids:
        raise ValueError("collect_features: no rows")
    X = sp.csr_matrix((np.concatenate(values), np.concatenate(indices).astype(np.int64),
                       np.asarray(indptr)), shape=(len(ids), n_features))
    return (np.asarray(ids, dtype=object), X, np.asarray(labels, dtype=np.int64),
            np.asarray(weights, dtype=np.float64))


def fit_sklearn(X, y, sample_weight, C: float, max_iter: int):
    """scikit-learn multinomial LogisticRegression(lbfgs); class balance comes in sample_weight.
    Its ConvergenceWarning is silenced: train-lr reports convergence itself (lr.convergence)."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, sample_weight=sample_weight)


def sklearn_to_dict(model) -> dict[str, Any]:
    """The fitted model as plain JSON-able data (no pickle: portable and safe to load)."""
    return {"classes": [int(c) for c in model.classes_], "coef": model.coef_.tolist(),
            "intercept": model.intercept_.tolist(), "n_features": int(model.coef_.shape[1]),
            "n_iter": int(np.max(model.n_iter_))}


def sklearn_from_dict(data: dict[str, Any]):
    """Rebuild a scikit-learn LogisticRegression (predict/predict_proba work) from sklearn_to_dict."""
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(solver="lbfgs")
    model.classes_ = np.asarray(data["classes"])
    model.coef_ = np.asarray(data["coef"], dtype=np.float64)
    model.intercept_ = np.asarray(data["intercept"], dtype=np.float64)
    model.n_features_in_ = int(data["n_features"])
    return model


def linear_proba(X, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Softmax(X·coefᵀ + intercept): the multinomial model's class probabilities."""
    z = np.asarray(X @ coef.T) + intercept
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_linear(features: DataFrame, coef: np.ndarray, intercept: np.ndarray,
                   classes: list[int]) -> DataFrame:
    """Score a fitted linear softmax model (the scikit-learn one) inside Spark, lazily.

    No built-in applies foreign coefficients to a vector column, and pandas UDFs cannot take
    vectors, so this is a plain Python UDF; coefficients travel once per executor by broadcast.
    """
    spark = features.sparkSession
    bc = spark.sparkContext.broadcast((np.asarray(coef, dtype=np.float64),
                                       np.asarray(intercept, dtype=np.float64)))
    # probabilities for every class 0..4, even ones the model never saw (probability 0)
    slots = [int(c) for c in classes]

    @F.udf(returnType=T.ArrayType(T.DoubleType()))
    def proba(vec):
        from pyspark.ml.linalg import SparseVector
        w, b = bc.value
        if isinstance(vec, SparseVector):
            z = w[:, vec.indices] @ vec.values + b
        else:
            z = w @ vec.toArray() + b
        z = z - z.max()
        e = np.exp(z)
        p = e / e.sum()
        full = [0.0] * N_CLASSES
        for slot, value in zip(slots, p):
            full[slot] = float(value)
        return full

    scored = features.select("review_id", "label", proba(F.col("features")).alias("proba"))
    return scored.select("review_id", F.col("label").cast("int").alias("label"),
                         F.expr("array_position(proba, array_max(proba)) - 1").cast("int").alias("pred"),
                         "proba")


# --------------------------------------------------------------------------- both
def confusion_counts(predictions: DataFrame, where: str) -> np.ndarray:
    """5×5 confusion counts (rows true) of a predictions table (label, pred; labels 0..4) by a
    Spark aggregate: 25 rows reach the driver, not the predictions. A row without a label, or a
    label or prediction outside 0..4, is a ValueError naming `where`."""
    conf = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    for row in predictions.groupBy("label", "pred").count().collect():
        label, pred, count = row["label"], row["pred"], int(row["count"])
        if label is None:
            raise ValueError(f"{where}: {count} rows without a label")
        if not (0 <= label < N_CLASSES and pred is not None and 0 <= pred < N_CLASSES):
            raise ValueError(f"{where}: {count} rows with label {label} and prediction {pred} "
                             f"(both must be 0..{N_CLASSES - 1})")
        conf[label, pred] += count
    return conf


def sparse_rows_frame(spark, X, y, w, review_ids=None) -> DataFrame:
    """Driver-side (X csr, y, w) → a DataFrame review_id, label, weight, features (after ADASYN).

    Synthetic rows without an id get 'synthetic-<i>'.
    """
    from pyspark.ml.linalg import SparseVector, VectorUDT
    import scipy.sparse as sp
    X = sp.csr_matrix(X, copy=True)
    X.sum_duplicates()            # also sorts indices: SparseVector needs them increasing
    X.sort_indices()
    n = X.shape[0]
    ids = list(review_ids) if review_ids is not None else []
    ids += [f"synthetic-{i}" for i in range(len(ids), n)]
    schema = T.StructType([T.StructField("review_id", T.StringType(), False),
                           T.StructField("label", T.IntegerType(), False),
                           T.StructField("weight", T.DoubleType(), False),
                           T.StructField("features", VectorUDT(), False)])
    rows = [(ids[i], int(y[i]), float(w[i]),
             SparseVector(X.shape[1], X.indices[X.indptr[i]:X.indptr[i + 1]].tolist(),
                          X.data[X.indptr[i]:X.indptr[i + 1]].tolist()))
            for i in range(n)]
    return spark.createDataFrame(rows, schema)
