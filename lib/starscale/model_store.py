"""Saved models: each kind's files in its folder, saving and loading them, and the one way a
model is scored on a table.

    LR   (train-lr):   <model_dir>/{mllib_coef.npy, mllib_model.json} (MLlib: coefficients and
                       metadata written from the driver, lr.mllib_model_data; older folders
                       hold Spark's model/ layout) or <model_dir>/sklearn_model.json
                       (lr.sklearn_to_dict)
    LSTM (train-lstm): <model_dir>/{model.json, weights.npz, vocab.txt, config.json}
                       (lstm.save_bundle's layout; the model is rebuilt from model.json by
                       starscale's own code and the weights loaded into it; folders from before
                       issue 15 hold model.keras instead, loaded after the Keras allow-list)

A model or encode folder is a published output: its files are read from
``storage.resolve(folder, manifest)`` / ``storage.data_dir`` (a version folder inside it on
object stores), never from the folder itself.

``score_table(spark, model, encode_dir, split, save_to=...)`` scores a model on one split of
encode's output → ``Scored`` (the confusion counts; the metrics and the bootstrap need nothing
else). LR: the features table through the model's Spark scorer; Spark writes the predictions
to ``save_to`` and a 25-row aggregate of the written table gives the counts, so no prediction
row reaches the driver (issue 14). LSTM: the sequences shards chunk by chunk through
``lstm_proba`` on the driver, whose arrays are kept and saved. train-lr, train-lstm and
evaluate all call it; predict scores raw text inside Spark with the same LR scorer and the same
``lstm_proba``.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from starscale import layout, lr, metrics, results, storage
from starscale.tables import FEATURES_SCHEMA

MLLIB_MODEL = "model"                    # MLlib's own layout (encode outputs before issue 16)
MLLIB_COEF = "mllib_coef.npy"            # MLlib coefficients, classes × features
MLLIB_META = "mllib_model.json"          # uid, numClasses, numFeatures, intercepts
SKLEARN_MODEL = "sklearn_model.json"     # scikit-learn coefficients (lr.sklearn_to_dict)
PRODUCERS = {"lr": "train-lr", "lstm": "train-lstm"}

# Models are data: a model folder may come from anywhere (a manifest's encode_dir, a copied
# bundle), and both Keras (even with safe_mode in TF 2.15) and PySpark import the module a saved
# model's metadata names. The LSTM is therefore rebuilt from starscale's own code
# (lstm.model_from_bytes); the TF-IDF pipeline is loaded only after its metadata passes the
# allow-list below, and an older bundle's .keras file only after checkpoints.check_keras_bytes.
TFIDF_STAGE_CLASSES = frozenset(f"org.apache.spark.ml.feature.{name}" for name in (
    "RegexTokenizer", "NGram", "SQLTransformer", "HashingTF", "CountVectorizerModel",
    "IDFModel", "Normalizer"))
PIPELINE_CLASSES = frozenset({"org.apache.spark.ml.PipelineModel"})

# LSTM models loaded in this Python process (an executor's, for predict), by model file path.
_LSTM_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class SavedModel:
    """A model ready to score. predictor: LR — features DataFrame → review_id, label, pred,
    proba; LSTM — the Keras model."""
    kind: str                       # lr | lstm
    engine: str | None              # mllib | sklearn for the LR; None for the LSTM
    manifest: dict
    predictor: Any

    @property
    def name(self) -> str:
        return layout.model_name(self.kind, self.engine)


@dataclass(frozen=True)
class Scored:
    """One model's predictions on one split (labels 0..4): their 5×5 confusion counts (rows
    true), the seconds scoring took and where they were saved (None: not saved). The per-row
    arrays (rows in the order scored) only where the driver scored them (the LSTM); None where
    Spark scored and wrote them (the LR)."""
    confusion: np.ndarray
    seconds: float
    saved: str | None = None
    review_ids: np.ndarray | None = None
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.confusion.sum())

    def summary(self) -> dict:
        """metrics.summary of the predictions."""
        return metrics.summary_of_counts(self.confusion)

    def bootstrap_ci(self, n: int, seed: int) -> dict | None:
        """metrics.bootstrap_ci of the predictions (None when n is 0: no bootstrap)."""
        return metrics.bootstrap_ci_of_counts(self.confusion, n, seed) if n else None


def require(spark, kind: str, model_dir: str) -> dict:
    """The manifest of a published model, or a ValueError naming the stage to run."""
    return storage.require_manifest(spark, model_dir, PRODUCERS[kind])


# --------------------------------------------------------------------------- LR
def save_lr(spark, folder: str, engine: str, model) -> None:
    """A fitted MLlib or scikit-learn LR into a (staging) model folder."""
    if engine == "mllib":
        # From the driver: Spark's writer would ship the coefficients inside one task.
        coef, intercept, meta = lr.mllib_model_data(model)
        buf = io.BytesIO()
        np.save(buf, coef)
        storage.write_bytes(layout.join(folder, MLLIB_COEF), buf.getvalue())
        storage.write_bytes(layout.join(folder, MLLIB_META), json.dumps(
            {**meta, "intercept": intercept.tolist()}).encode())
    else:
        storage.write_text(spark, layout.join(folder, SKLEARN_MODEL),
                           json.dumps(lr.sklearn_to_dict(model)))


def lr_predictor(engine: str, model) -> Callable[[DataFrame], DataFrame]:
    """features → review_id, label, pred, proba for an MLlib model or a scikit-learn model (or
    its lr.sklearn_to_dict form), scored inside Spark."""
    if engine == "mllib":
        dense = lr.dense_mllib_model(model)      # a sparse coefficient matrix scores slowly
        return lambda features: lr.predict_mllib(dense, features)
    data = model if isinstance(model, dict) else lr.sklearn_to_dict(model)
    coef, intercept = np.asarray(data["coef"]), np.asarray(data["intercept"])
    return lambda features: lr.predict_linear(features, coef, intercept, data["classes"])


def load_lr(spark, model_dir: str) -> SavedModel:
    manifest = require(spark, "lr", model_dir)
    engine = manifest.get("engine")
    root = storage.resolve(model_dir, manifest)
    if engine == "mllib":
        return SavedModel("lr", engine, manifest, lr_predictor(engine, load_mllib(root)))
    if engine == "sklearn":
        data = json.loads(storage.read_text(spark, layout.join(root, SKLEARN_MODEL)))
        return SavedModel("lr", engine, manifest, lr_predictor(engine, data))
    raise ValueError(f"{model_dir}/{storage.MANIFEST}: engine {engine!r} is not an LR model "
                     f"(expected mllib or sklearn)")


def load_mllib(model_dir: str):
    """The MLlib LogisticRegressionModel of a train-lr folder: rebuilt from mllib_coef.npy +
    mllib_model.json (arrays only, no pickles; shapes checked), or Spark's own layout in
    older folders."""
    meta_path = layout.join(model_dir, MLLIB_META)
    meta_bytes = storage.read_bytes(meta_path)
    if meta_bytes is None:
        from pyspark.ml.classification import LogisticRegressionModel
        return LogisticRegressionModel.load(layout.join(model_dir, MLLIB_MODEL))
    coef_path = layout.join(model_dir, MLLIB_COEF)
    try:
        meta = json.loads(meta_bytes)
        intercept = np.asarray(meta["intercept"], dtype=np.float64)
        k, d = int(meta["numClasses"]), int(meta["numFeatures"])
        coef = np.load(io.BytesIO(storage.read_bytes(coef_path) or b""), allow_pickle=False)
    except (ValueError, KeyError, TypeError, OSError, EOFError) as exc:
        raise ValueError(f"{model_dir}: not a readable MLlib LR model ({MLLIB_META}, "
                         f"{MLLIB_COEF}: {exc})") from None
    if coef.shape != (k, d) or intercept.shape != (k,) or not np.issubdtype(coef.dtype,
                                                                              np.floating):
        raise ValueError(f"{coef_path}: {coef.dtype} {coef.shape} with {intercept.shape[0]} "
                         f"intercepts does not fit {MLLIB_META} (numClasses {k}, numFeatures {d})")
    return lr.mllib_model_from_data(coef, intercept, meta)


def read_features(spark, encode_dir: str, split: str) -> DataFrame:
    """One split of encode/<tag>/features: review_id, label, weight, features."""
    features = layout.join(storage.data_dir(spark, encode_dir), layout.FEATURES)
    return (spark.read.schema(FEATURES_SCHEMA).parquet(features)
            .where(F.col("split") == split)
            .select("review_id", "label", "weight", "features"))


# --------------------------------------------------------------------------- LSTM
def find_lstm_bundle(model_dir: str) -> str:
    """The LSTM bundle inside a local model folder (at the top or one level down): the folder
    holding model.json, or an older bundle's model.keras file; a published model folder is
    resolved first (storage.data_dir: its version folder, if any)."""
    from starscale.lstm import ARCH_FILE, MODEL_FILE
    local = storage.local_path(model_dir)
    if local is None:
        raise ValueError(f"{model_dir}: LSTM models are loaded from a local path; copy it locally")
    if os.path.isdir(local):
        local = storage.local_path(storage.data_dir(None, local))
    if os.path.isfile(local):
        return local
    for name in (ARCH_FILE, MODEL_FILE):
        if os.path.isfile(os.path.join(local, name)):
            return local if name == ARCH_FILE else os.path.join(local, name)
        below = sorted(os.path.join(local, d) for d in os.listdir(local)
                       if os.path.isfile(os.path.join(local, d, name))) \
            if os.path.isdir(local) else []
        if below:
            return below[0] if name == ARCH_FILE else os.path.join(below[0], name)
    raise ValueError(f"{model_dir}: no LSTM bundle ({ARCH_FILE} + weights.npz) here or one "
                     f"folder down")


def load_lstm_bundle(path: str):
    """A Keras LSTM from a bundle folder, local or on any storage.filesystem URI: rebuilt by
    lstm.model_from_bytes from model.json + weights.npz. An older bundle (model.keras, or a
    path to a .keras file) is loaded after checkpoints.check_keras_bytes."""
    from starscale import lstm
    from starscale.training.checkpoints import load_model_bytes
    path = path.rstrip("/")
    if not path.endswith(".keras"):
        arch = storage.read_bytes(layout.join(path, lstm.ARCH_FILE))
        if arch is not None:
            weights = storage.read_bytes(layout.join(path, lstm.WEIGHTS_FILE))
            if weights is None:
                raise ValueError(f"{path}: {lstm.ARCH_FILE} without {lstm.WEIGHTS_FILE}")
            return lstm.model_from_bytes(arch, weights, path)
        path = layout.join(path, lstm.MODEL_FILE)
    data = storage.read_bytes(path)
    if data is None:
        raise ValueError(f"no saved model at {path}")
    return load_model_bytes(data, compile=False, where=path)


def check_tfidf_pipeline(spark, folder: str) -> None:
    """ValueError unless a saved TF-IDF PipelineModel holds only the stage classes encode
    writes (TFIDF_STAGE_CLASSES): PySpark imports the class a stage's metadata names."""
    def meta(path: str) -> dict:
        try:
            text = storage.read_text(spark, layout.join(path, "metadata", "part-00000"))
            return json.loads(text.splitlines()[0])
        except Exception as exc:         # noqa: BLE001 - missing, unparsable, bad checksum
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{path}: not a readable saved Spark ML model ({first[:200]})") \
                from None

    top = meta(folder)
    if top.get("class") not in PIPELINE_CLASSES:
        raise ValueError(f"{folder}: refusing to load {top.get('class')!r}: not a TF-IDF pipeline")
    for stage in storage.list_dirs(spark, layout.join(folder, "stages")):
        cls = meta(layout.join(folder, "stages", stage)).get("class")
        if cls not in TFIDF_STAGE_CLASSES:
            raise ValueError(f"{folder}/stages/{stage}: refusing to load stage class {cls!r}; "
                             f"a TF-IDF pipeline holds only {sorted(TFIDF_STAGE_CLASSES)}")


def load_tfidf_pipeline(spark, folder: str):
    """The encode stage's fitted TF-IDF PipelineModel (encode.load_tfidf_model: the IDF weights
    beside the pipeline, or Spark's own layout from older encode outputs), after
    check_tfidf_pipeline on the saved stages."""
    from starscale import encode
    split_idf = storage.read_bytes(layout.join(folder, encode.TFIDF_IDF_META)) is not None
    check_tfidf_pipeline(spark, layout.join(folder, encode.TFIDF_PIPELINE) if split_idf else folder)
    return encode.load_tfidf_model(folder)


def cached_lstm(bundle: str):
    """The Keras model of a bundle (load_lstm_bundle), loaded once per Python process
    (executor)."""
    model = _LSTM_CACHE.get(bundle)
    if model is None:
        model = _LSTM_CACHE[bundle] = load_lstm_bundle(bundle)
    return model


def load_lstm(spark, model_dir: str) -> SavedModel:
    """The driver's copy of a saved LSTM (evaluate): the driver hides its GPUs first."""
    from starscale.training.devices import hide_gpus_in_driver
    hide_gpus_in_driver()
    manifest = require(spark, "lstm", model_dir)
    return SavedModel("lstm", None, manifest, load_lstm_bundle(find_lstm_bundle(model_dir)))


def save_lstm(folder: str, model_file: str, vocab_file: str, config: dict,
              architecture: dict) -> str:
    """The LSTM bundle into a (staging) model folder: model.json (architecture:
    lstm.build_model's arguments), the weights of the trained model file (training's
    final.keras, allow-list checked), the vocabulary it was encoded with and the resolved
    config. Returns the folder."""
    from starscale import lstm
    from starscale.training.checkpoints import load_model_bytes
    data = storage.read_bytes(model_file)
    if data is None:
        raise ValueError(f"no trained model at {model_file}")
    trained = load_model_bytes(data, compile=False, where=model_file)
    arch = lstm.check_architecture(architecture, lstm.ARCH_FILE)
    storage.write_bytes(layout.join(folder, lstm.ARCH_FILE),
                        json.dumps(arch, indent=2, sort_keys=True).encode())
    storage.write_bytes(layout.join(folder, lstm.WEIGHTS_FILE), lstm.weights_bytes(trained))
    storage.copy_file(vocab_file, layout.join(folder, lstm.VOCAB_FILE))
    storage.write_bytes(layout.join(folder, lstm.CONFIG_FILE),
                        json.dumps(config, indent=2, sort_keys=True, default=str).encode())
    return folder


def lstm_text_settings(bundle: str, encode_dir: str, max_len: int, padding: str,
                       truncating: str) -> tuple[list[str], int, str, str]:
    """How a saved LSTM encodes text: (vocabulary, max_len, padding, truncating) from its bundle
    (find_lstm_bundle's path: vocab.txt, config.json); the (published, local) encode folder's
    vocab.txt and the given settings otherwise."""
    from starscale.encode import load_vocab
    from starscale.lstm import CONFIG_FILE, VOCAB_FILE
    folder = bundle if os.path.isdir(bundle) else os.path.dirname(bundle)
    model_file = bundle
    vocab_file = os.path.join(folder, VOCAB_FILE)
    if not os.path.isfile(vocab_file):
        vocab_file = os.path.join(storage.local_path(storage.data_dir(None, encode_dir)),
                                  layout.VOCAB)
    if not os.path.isfile(vocab_file):
        raise ValueError(f"{model_file}: no vocab.txt beside the model nor in {encode_dir}")
    with open(vocab_file) as fh:
        vocab = load_vocab(fh.read(), vocab_file)
    settings = {"max_len": max_len, "padding": padding, "truncating": truncating}
    config_file = os.path.join(folder, CONFIG_FILE)
    if os.path.isfile(config_file):
        with open(config_file) as fh:
            saved = json.load(fh)
        for source in (saved, saved.get("encode") or {}):
            settings.update({k: source[k] for k in settings if k in source})
    return vocab, int(settings["max_len"]), settings["padding"], settings["truncating"]


def lstm_proba(model, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, 5) class probabilities of token-id rows (n, max_len): the one Keras predict call."""
    if len(ids) == 0:
        return np.zeros((0, metrics.N_CLASSES))
    return np.asarray(model.predict(ids, batch_size=batch_size, verbose=0), dtype=np.float64)


# --------------------------------------------------------------------------- scoring
def load(spark, kind: str, model_dir: str) -> SavedModel:
    return load_lr(spark, model_dir) if kind == "lr" else load_lstm(spark, model_dir)


def score_table(spark, model: SavedModel, encode_dir: str, split: str = "test",
                batch_size: int = 1024, save_to: str | None = None) -> Scored:
    """Score a model on one split of encode's output (batch_size: LSTM rows per predict).
    save_to: the predictions' path (results.predictions_path), written there as Parquet
    (review_id, label, pred, proba); None: not saved (an LR's are then only counted)."""
    started = time.time()
    where = f"{encode_dir}: the {split} split"
    if model.kind == "lr":
        predictions = model.predictor(read_features(spark, encode_dir, split)).select(
            "review_id", "label", "pred", "proba")
        if save_to is not None:
            results.write_prediction_table(predictions, save_to)
            predictions = spark.read.parquet(save_to)
        conf = lr.confusion_counts(predictions, where)
        if not conf.sum():
            raise ValueError(f"{where} is empty")
        return Scored(conf, time.time() - started, saved=save_to)
    ids, y_true, y_pred, proba = _score_sequences(
        model.predictor, storage.data_dir(spark, encode_dir), split, batch_size)
    if y_true is None or len(y_true) == 0:
        raise ValueError(f"{where} is empty or has null labels")
    seconds = time.time() - started
    if save_to is not None:
        results.write_predictions(save_to, ids, y_true, y_pred, proba)
    return Scored(metrics.confusion(y_true, y_pred), seconds, save_to, ids, y_true, y_pred, proba)


def _score_sequences(model, encode_dir: str, split: str, batch_size: int):
    """The LSTM on every row of a split's sequences, one record batch at a time, file order."""
    from starscale.training.data import sequences_dir, split_chunks
    ids_out, labels, probas = [], [], []
    for rid, lab, _wt, ids in split_chunks(sequences_dir(encode_dir), split,
                                           max(batch_size, 1024)):
        if not len(lab):
            continue
        probas.append(lstm_proba(model, ids, batch_size))
        ids_out.extend(rid.tolist())
        labels.append(lab)
    if not labels:
        return np.zeros(0, dtype=object), None, None, None
    proba = np.concatenate(probas)
    return (np.asarray(ids_out, dtype=object), np.concatenate(labels).astype(np.int64),
            proba.argmax(axis=1).astype(np.int64), proba)
