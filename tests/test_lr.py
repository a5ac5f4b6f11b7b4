"""LR baselines: MLlib vs scikit-learn parity, stage outputs, evaluate and batch scoring.

The inputs are a few thousand synthetic texts whose words depend on the star, published as
prepare/ and encode/<tag>/ folders (with manifests) the way the upstream stages publish them.
"""
from __future__ import annotations


import gzip
import json
import os
import string

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sklearn.linear_model import LogisticRegression

from starscale import lr, metrics, results, storage
from starscale.encode import OOV, PAD, tfidf_pipeline, vocab_text, with_token_ids
from starscale.stages import evaluate as evaluate_stage
from starscale.stages import predict as predict_stage
from starscale.stages import train_lr
from tests.helpers import make_config

TAG = "full_random_under_top4000"      # Config.encode_tag() of the test config
SAMPLE_TAG = "full_random_under"
LSTM_MAX_LEN = 12
N_REVIEWS = 2500
# lr.reg_grid empty: one fit at lr.C (the engines' parity); the grid has its own test at the end
BASE = ("sample.size=full", "sample.method=random_under", "evaluate.bootstrap=200",
        "lr.max_iter=300", "lr.reg_grid=[]")


def _word(prefix: str, k: int) -> str:
    letters = string.ascii_lowercase
    return prefix + letters[k // 26] + letters[k % 26]   # letters only: cleaning keeps it as is


def synthetic_reviews(n: int, seed: int) -> list[tuple[str, int, str, str]]:
    """(review_id, star, text, split): each word is from the star's own list with p 0.3, a
    neighbouring star's with p 0.2, else from a shared noise list (so the task is learnable
    but not trivial)."""
    rng = np.random.default_rng(seed)
    star_words = {s: [_word(f"s{'abcde'[s - 1]}", j) for j in range(15)] for s in range(1, 6)}
    noise = [_word("noise", j) for j in range(80)]
    rows = []
    for i in range(n):
        star = int(rng.integers(1, 6))
        words = []
        for _ in range(int(rng.integers(6, 14))):
            u = rng.random()
            if u < 0.3:
                words.append(star_words[star][rng.integers(15)])
            elif u < 0.5:
                other = min(5, max(1, star + int(rng.choice([-1, 1]))))
                words.append(star_words[other][rng.integers(15)])
            else:
                words.append(noise[rng.integers(len(noise))])
        split = "test" if i % 10 < 3 else ("validation" if i % 10 == 3 else "train")
        rows.append((f"R{i:05d}", star, " ".join(words), split))
    return rows


REVIEW_SCHEMA = T.StructType([T.StructField("review_id", T.StringType()),
                              T.StructField("star", T.IntegerType()),
                              T.StructField("text", T.StringType()),
                              T.StructField("split", T.StringType())])


@pytest.fixture(scope="module")
def workspace(spark, tmp_path_factory):
    """Published prepare/ and encode/<tag>/ folders of the synthetic reviews; the tmp root."""
    root = tmp_path_factory.mktemp("lr")
    cfg = make_config(root, *BASE)
    reviews = spark.createDataFrame(synthetic_reviews(N_REVIEWS, seed=3), REVIEW_SCHEMA)

    def write_prepare(staging: str) -> dict:
        (reviews.withColumn("class_rank", F.lit(None).cast("long"))
         .write.parquet(staging + "/reviews"))
        return {"rows": N_REVIEWS}

    storage.publish(spark, cfg.stage_dir("prepare"), write_prepare, {"stage": "prepare"})

    def write_encode(staging: str) -> dict:
        train_texts = reviews.where(F.col("split") == "train")
        model = tfidf_pipeline(ngram_max=1, num_features=300, hashed=False).fit(train_texts)
        model.write().save(staging + "/tfidf_model")
        features = (model.transform(reviews)
                    .select("review_id", (F.col("star") - 1).cast("int").alias("label"),
                            F.lit(1.0).alias("weight"), "features", "split"))
        features.write.partitionBy("split").parquet(staging + "/features")
        # the ADASYN cell: the same features with 4 in 5 train rows of 1 star left out
        dropped = (F.col("split") == "train") & (F.col("label") == 0) \
            & (F.abs(F.xxhash64("review_id")) % 5 != 0)
        adasyn_features.append(features.where(~dropped))
        # sequences (test only) and vocab.txt for the LSTM scoring tests
        vocab = [PAD, OOV] + sorted({w for r in synthetic_reviews(N_REVIEWS, 3) for w in r[2].split()})
        storage.write_text(spark, staging + "/vocab.txt", vocab_text(vocab))
        test = reviews.where(F.col("split") == "test").select(
            "review_id", (F.col("star") - 1).cast("int").alias("label"),
            F.lit(1.0).alias("weight"), "text", "split")
        (with_token_ids(test, vocab, LSTM_MAX_LEN, "pre", "pre")
         .select("review_id", "label", "weight", "ids", "split", F.lit(0).alias("shard"))
         .write.partitionBy("split", "shard").parquet(staging + "/sequences"))
        return {"tag": TAG}

    adasyn_features: list = []
    storage.publish(spark, os.path.join(cfg.stage_dir("encode"), TAG), write_encode,
                    {"stage": "encode"})
    encode_dir = os.path.join(cfg.stage_dir("encode"), TAG)

    def write_adasyn(staging: str) -> dict:
        adasyn_features[0].write.partitionBy("split").parquet(staging + "/features")
        return {"tag": "full_adasyn_top4000"}

    storage.publish(spark, os.path.join(cfg.stage_dir("encode"), "full_adasyn_top4000"), write_adasyn,
                    {"stage": "encode", "from": encode_dir})
    return root


def _cfg(root, *overrides):
    return make_config(root, *BASE, *overrides)


def _train_rows() -> int:
    return sum(1 for r in synthetic_reviews(N_REVIEWS, seed=3) if r[3] == "train")


@pytest.fixture(scope="module")
def trained(spark, workspace):
    """train-lr with both engines at one setting (lr.reg_grid empty): lr.reg_param null, so
    MLlib's regParam is derived from lr.C (scikit-learn's objective)."""
    return {engine: train_lr.run(spark, _cfg(workspace, f"lr.engine={engine}"))
            for engine in ("mllib", "sklearn")}


def test_engines_agree_within_0_02(trained):
    mllib, sklearn = trained["mllib"], trained["sklearn"]
    assert mllib["score"] > 0.5 and sklearn["score"] > 0.5          # the task is learnable
    assert abs(mllib["score"] - sklearn["score"]) < 0.02
    assert abs(mllib["accuracy"] - sklearn["accuracy"]) < 0.02
    assert mllib["train_rows"] == sklearn["train_rows"] == _train_rows()
    assert mllib["test_rows"] == sum(1 for r in synthetic_reviews(N_REVIEWS, 3) if r[3] == "test")


def test_train_lr_writes_model_results_and_predictions(spark, trained, workspace):
    cfg = _cfg(workspace)
    table = results.read_results(cfg.stage_dir("results")).set_index("run_id")
    for engine, summary in trained.items():
        row = table.loc[summary["run_id"]]
        assert row["engine"] == engine and row["model"] == "lr" and row["tag"] == TAG
        assert row["score"] == pytest.approx(summary["score"])
        assert row["score_lo"] <= row["score"] <= row["score_hi"]
        assert metrics.score(json.loads(row["confusion"])) == pytest.approx(summary["score"])
        assert row["lr.engine"] == engine and row["sample_method"] == "random_under"
        assert row["rows_seen"] == row["train_rows"] * row["iterations"]
        if engine == "mllib":   # regParam = 1 / (C · Σw); balanced data: every weight is 1
            assert row["lr.reg_param_effective"] == pytest.approx(1.0 / _train_rows())
        saved = results.read_predictions(cfg.stage_dir("results"), summary["run_id"])
        # the saved predictions reproduce the reported metrics (scored by scikit-learn)
        assert metrics.summary(saved["label"], saved["pred"])["score"] == pytest.approx(summary["score"])
        model_dir = os.path.join(cfg.stage_dir("models"), f"lr_{engine}", TAG)
        assert storage.read_manifest(spark, model_dir)["engine"] == engine


def test_mllib_model_is_saved_from_the_driver_and_scores_as_fitted(spark, trained, workspace):
    """The MLlib model folder holds the coefficients and metadata written from the driver (no
    Spark writer task carrying the matrix); the model rebuilt from them gives the probabilities
    train-lr saved for the test split; a foreign or mismatched file is refused by name."""
    from starscale import model_store
    cfg = _cfg(workspace)
    model_dir = os.path.join(cfg.stage_dir("models"), "lr_mllib", TAG)
    assert {"mllib_coef.npy", "mllib_model.json"} <= set(os.listdir(model_dir))
    assert not os.path.exists(os.path.join(model_dir, "model"))
    loaded = model_store.load(spark, "lr", model_dir)
    again = str(workspace / "rescored.parquet")
    scored = model_store.score_table(spark, loaded, os.path.join(cfg.stage_dir("encode"), TAG),
                                     save_to=again)
    saved = results.read_predictions(cfg.stage_dir("results"), trained["mllib"]["run_id"])
    saved = saved.sort_values("review_id").reset_index(drop=True)
    rescored = pq.read_table(again).to_pandas().sort_values("review_id").reset_index(drop=True)
    assert scored.review_ids is None and scored.saved == again    # written by Spark, not held
    assert list(saved["review_id"]) == list(rescored["review_id"])
    np.testing.assert_allclose(np.vstack(saved["proba"].to_numpy()),
                               np.vstack(rescored["proba"].to_numpy()), atol=1e-12)
    np.testing.assert_array_equal(scored.confusion, metrics.confusion(saved["label"],
                                                                      saved["pred"]))
    bad = workspace / "bad_mllib"
    bad.mkdir()
    meta = json.loads(open(os.path.join(model_dir, "mllib_model.json")).read())
    (bad / "mllib_model.json").write_text(json.dumps({**meta, "numFeatures": 3}))
    (bad / "mllib_coef.npy").write_bytes(open(os.path.join(model_dir, "mllib_coef.npy"),
                                              "rb").read())
    with pytest.raises(ValueError, match=r"mllib_coef.npy: float64 \(5, \d+\) with 5 "
                                         r"intercepts does not fit mllib_model.json"):
        model_store.load_mllib(str(bad))
    np.save(str(bad / "mllib_coef.npy"), np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable MLlib LR model"):
        model_store.load_mllib(str(bad))


def test_train_lr_skips_when_up_to_date(spark, trained, workspace):
    cfg = _cfg(workspace, "lr.engine=mllib")
    again = train_lr.run(spark, cfg)
    assert again["skipped"] is True and again["run_id"] == trained["mllib"]["run_id"]


@pytest.mark.parametrize("engine", ["mllib", "sklearn"])
def test_batch_scoring_matches_in_process_evaluation(spark, trained, workspace, engine):
    cfg = _cfg(workspace, f"lr.engine={engine}", f"predict.output={workspace}/pred_{engine}")
    summary = predict_stage.run(spark, cfg)
    assert summary["rows_in"] == summary["predicted"] == N_REVIEWS
    scored = spark.read.parquet(f"{workspace}/pred_{engine}/predictions").toPandas()
    saved = results.read_predictions(cfg.stage_dir("results"), trained[engine]["run_id"])
    merged = saved.merge(scored, on="review_id", how="inner", validate="one_to_one")
    assert len(merged) == len(saved)
    np.testing.assert_array_equal(merged["pred_star"].to_numpy(), merged["pred"].to_numpy() + 1)
    np.testing.assert_array_equal(merged["star"].to_numpy(), merged["label"].to_numpy() + 1)
    np.testing.assert_allclose(np.vstack(merged["proba_y"].to_numpy()),
                               np.vstack(merged["proba_x"].to_numpy()), atol=1e-9)


def test_batch_scoring_of_raw_tsv_cleans_and_quarantines(spark, trained, workspace):
    reviews = [r for r in synthetic_reviews(N_REVIEWS, seed=3) if r[3] == "test"][:40]
    header = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
              "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
              "review_headline\treview_body\treview_date")
    lines = [header]
    for rid, star, text, _ in reviews:
        # raw dirt the cleaning removes: upper case, <br />, an entity
        body = text.upper().replace(" ", " <br />", 1) + " &amp;"
        lines.append(f"US\t1\t{rid}\tP\t1\tT\tSoftware\t{star}\t0\t0\tN\tY\tH\t{body}\t2015-01-01")
    lines.append("US\tbroken line with too few fields")
    path = workspace / "raw.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    cfg = _cfg(workspace, "lr.engine=mllib", f"predict.input={path}",
               f"predict.output={workspace}/pred_tsv")
    summary = predict_stage.run(spark, cfg)
    assert (summary["rows_in"], summary["predicted"], summary["quarantined"]) == (42, 40, 1)
    quarantine = spark.read.parquet(f"{workspace}/pred_tsv/quarantine").collect()
    assert [q["reason"] for q in quarantine] == ["field_count"]
    scored = spark.read.parquet(f"{workspace}/pred_tsv/predictions").toPandas()
    saved = results.read_predictions(cfg.stage_dir("results"), trained["mllib"]["run_id"])
    merged = saved.merge(scored, on="review_id", how="inner", validate="one_to_one")
    assert len(merged) == 40
    np.testing.assert_array_equal(merged["pred_star"].to_numpy(), merged["pred"].to_numpy() + 1)


def test_evaluate_stage_rescores_the_saved_model(spark, trained, workspace):
    cfg = _cfg(workspace, "lr.engine=sklearn", "evaluate.model=lr")
    summary = evaluate_stage.run(spark, cfg)
    assert summary["engine"] == "sklearn"
    assert summary["score"] == pytest.approx(trained["sklearn"]["score"], abs=1e-12)
    assert summary["ci"]["score"][0] <= summary["score"] <= summary["ci"]["score"][1]
    table = results.read_results(cfg.stage_dir("results")).set_index("run_id")
    assert table.loc[summary["run_id"], "stage"] == "evaluate"
    assert table.loc[summary["run_id"], "trained_run_id"] == trained["sklearn"]["run_id"]


def test_sklearn_refuses_more_rows_than_the_limit(spark, workspace):
    cfg = _cfg(workspace, "lr.engine=sklearn", "lr.sklearn_max_rows=100", "lr.C=2.0")
    with pytest.raises(ValueError, match="lr.sklearn_max_rows"):
        train_lr.run(spark, cfg)


# --------------------------------------------------------------------------- pure functions
def test_balanced_sample_weights_equal_sklearn_class_weight_balanced():
    rng = np.random.default_rng(0)
    y = rng.choice(5, size=600, p=[0.5, 0.2, 0.1, 0.1, 0.1])
    X = rng.normal(size=(600, 8)) + y[:, None] * 0.3
    from starscale.resample import balanced_class_weights
    counts = {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
    w = np.vectorize(balanced_class_weights(counts).get)(y)
    ours = lr.fit_sklearn(X, y, w, C=0.5, max_iter=500)
    reference = LogisticRegression(solver="lbfgs", class_weight="balanced", C=0.5,
                                   max_iter=500).fit(X, y)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-5)
    rebuilt = lr.sklearn_from_dict(lr.sklearn_to_dict(ours))
    np.testing.assert_allclose(rebuilt.predict_proba(X), ours.predict_proba(X), atol=1e-12)
    np.testing.assert_allclose(lr.linear_proba(X, ours.coef_, ours.intercept_),
                               ours.predict_proba(X), atol=1e-12)


def test_with_fit_weight(spark):
    frame = spark.createDataFrame([("a", 0, 1.0), ("b", 1, 2.0), ("c", 1, 1.0)],
                                  "review_id string, label int, weight double")
    got = {r["review_id"]: r[lr.FIT_WEIGHT] for r in
           lr.with_fit_weight(frame, {0: 1.5, 1: 0.75}).collect()}
    assert got == {"a": 1.5, "b": 1.5, "c": 0.75}
    same = {r["review_id"]: r[lr.FIT_WEIGHT] for r in lr.with_fit_weight(frame, None).collect()}
    assert same == {"a": 1.0, "b": 2.0, "c": 1.0}


def test_convergence():
    assert lr.convergence(12, 100, [1.0, 0.5, 0.4])["converged"] is True
    hit = lr.convergence(100, 100, [1.0, 0.5, 0.4])
    assert hit["converged"] is False and hit["objective_change"] == pytest.approx(0.2)
    # every iteration used, but the objective no longer moves: converged
    assert lr.convergence(100, 100, [0.4, 0.4 * (1 - 1e-9)])["converged"] is True
    assert lr.convergence(100, 100, None) == {"iterations": 100, "converged": False,
                                              "objective_change": None}


def test_mllib_reg_for_C():
    assert lr.mllib_reg_for_C(2.0, 500.0) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        lr.mllib_reg_for_C(0.0, 10.0)


# --------------------------------------------------------------------------- ADASYN
@pytest.mark.parametrize("engine", ["sklearn", "mllib"])
def test_train_lr_with_adasyn(spark, workspace, engine):
    # only 1 star is grown: with 'auto', classes a few rows short of the majority make
    # imblearn's ADASYN give up ("No samples will be generated")
    cfg = _cfg(workspace, "sample.method=adasyn", "sample.strategy={1: 300}",
               f"lr.engine={engine}", "lr.max_iter=100", "evaluate.bootstrap=0")
    summary = train_lr.run(spark, cfg)
    row = results.read_results(cfg.stage_dir("results")).set_index("run_id").loc[summary["run_id"]]
    kept = spark.read.parquet(os.path.join(cfg.stage_dir("encode"), "full_adasyn_top4000", "features"))
    kept_train = kept.where(F.col("split") == "train").count()
    assert row["adasyn_rows_added"] > 0
    assert row["train_rows"] == kept_train + row["adasyn_rows_added"]
    assert row["sample_method"] == "adasyn" and summary["score"] > 0.5
    assert summary["ci"] is None and pd.isna(row["score_lo"])


# --------------------------------------------------------------------------- LSTM scoring
@pytest.fixture(scope="module")
def lstm_model_dir(spark, workspace):
    """An (untrained, seeded) LSTM bundle published where train-lstm publishes: models/lstm/<tag>."""
    from starscale import lstm
    cfg = _cfg(workspace)
    encode_dir = os.path.join(cfg.stage_dir("encode"), TAG)
    vocab = storage.read_text(spark, encode_dir + "/vocab.txt")
    vocab_size = len(vocab.splitlines())
    arch = {"vocab_size": vocab_size, "max_len": LSTM_MAX_LEN, "embedding_dim": 8, "units": 4,
            "layers": 1, "bidirectional": False, "spatial_dropout": 0.2, "dropout": 0.0,
            "recurrent_dropout": 0.0, "mixed_precision": False,
            "embedding_trainable": True}
    model = lstm.build_model(**arch, seed=5)
    output = os.path.join(cfg.stage_dir("models"), "lstm", SAMPLE_TAG)

    def write(staging: str) -> dict:
        lstm.save_bundle(model, staging, vocab + "\n",
                         {"max_len": LSTM_MAX_LEN, "padding": "pre", "truncating": "pre",
                          "vocab_size": vocab_size}, arch)
        return {"run_id": "lstm-fixture"}

    storage.publish(spark, output, write, {"stage": "train-lstm"})
    return output


def test_lstm_evaluate_and_batch_scoring_agree(spark, workspace, lstm_model_dir):
    cfg = _cfg(workspace, "evaluate.model=lstm", "predict.model=lstm", "evaluate.bootstrap=50",
               f"predict.output={workspace}/pred_lstm", "predict.batch_size=64")
    evaluated = evaluate_stage.run(spark, cfg)
    assert evaluated["model_kind"] == "lstm"
    assert evaluated["test_rows"] == sum(1 for r in synthetic_reviews(N_REVIEWS, 3) if r[3] == "test")
    predicted = predict_stage.run(spark, cfg)
    assert predicted["predicted"] == N_REVIEWS
    saved = results.read_predictions(cfg.stage_dir("results"), evaluated["run_id"])
    scored = spark.read.parquet(f"{workspace}/pred_lstm/predictions").toPandas()
    merged = saved.merge(scored, on="review_id", how="inner", validate="one_to_one")
    assert len(merged) == len(saved)
    np.testing.assert_allclose(np.vstack(merged["proba_y"].to_numpy()),
                               np.vstack(merged["proba_x"].to_numpy()), atol=1e-5)
    np.testing.assert_array_equal(merged["pred_star"].to_numpy(), merged["pred"].to_numpy() + 1)


def test_predict_input_format_detection(spark, workspace):
    folder = workspace / "corpus_like"
    folder.mkdir(exist_ok=True)
    (folder / "part-00000").write_text("marketplace\tcustomer_id\n")   # make-corpus names
    assert predict_stage.input_format(spark, str(folder), "auto") == "tsv"
    assert predict_stage.input_format(spark, str(workspace / "x.tsv.gz"), "auto") == "tsv"
    prepared = os.path.join(_cfg(workspace).stage_dir("prepare"), "reviews")
    assert predict_stage.input_format(spark, prepared, "auto") == "parquet"
    assert predict_stage.input_format(spark, prepared, "tsv") == "tsv"


@pytest.mark.parametrize("engine", ["mllib", "sklearn"])
def test_regularisation_is_chosen_on_validation(spark, workspace, engine, capsys):
    # regParam 1.0 shrinks every coefficient to ~0 (all rows get about the same probabilities):
    # its validation score must lose to 1e-4 and 1e-3; max_iter 3 stops before convergence.
    # (last in this file: it replaces the models the tests above read)
    cfg = _cfg(workspace, f"lr.engine={engine}", "lr.reg_grid=[1.0e-4, 1.0e-3, 1.0]",
               "lr.max_iter=3")
    summary = train_lr.run(spark, cfg, force=True)
    grid = summary["grid"]
    assert [p["reg_param"] for p in grid] == [1.0e-4, 1.0e-3, 1.0]
    scores = [p["val_score"] for p in grid]
    best = max(range(3), key=lambda i: scores[i])
    assert [p["selected"] for p in grid] == [i == best for i in range(3)]
    assert best != 2 and scores[2] < max(scores)
    assert summary["reg_param_effective"] == grid[best]["reg_param"]
    assert summary["validation"]["score"] == pytest.approx(scores[best])
    assert all(p["iterations"] <= 3 for p in grid)
    assert [p["converged"] for p in grid[:2]] == [False, False]   # 1.0 may converge at once
    assert "lr.max_iter=3 reached" in capsys.readouterr().out
    row = results.find_row(cfg.stage_dir("results"), summary["run_id"])
    assert row["val_score"] == pytest.approx(scores[best]) and row["converged"] is False
    assert [p["reg_param"] for p in json.loads(row["lr_grid"])] == [1.0e-4, 1.0e-3, 1.0]
    val = results.read_predictions(cfg.stage_dir("results"), summary["run_id"], "validation")
    assert metrics.summary(val["label"], val["pred"])["score"] == pytest.approx(scores[best])
    # the chosen candidate's validation predictions were moved there, the others removed
    names = os.listdir(os.path.join(cfg.stage_dir("results"), results.PREDICTIONS_DIR))
    assert sorted(n for n in names if summary["run_id"] in n) == [
        f"{summary['run_id']}.parquet", f"{summary['run_id']}.validation.parquet"]
    assert not [n for n in names if n.startswith("_")], names


def test_a_fitted_model_with_mostly_zero_coefficients_is_scored_dense(spark):
    """Spark compresses a fitted model's coefficients to a SparseMatrix when most are 0 (2^20
    hashed features: every feature absent from the train rows), and its predict then walks the
    whole matrix per row. The scorer rebuilds it dense: same probabilities."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from starscale import model_store
    d = 1 << 12
    rows = [(f"R{i}", i % 5, 1.0, SparseVector(d, [i % 40, 40 + i % 7], [1.0, 0.5]))
            for i in range(200)]
    schema = T.StructType([T.StructField("review_id", T.StringType()),
                           T.StructField("label", T.IntegerType()),
                           T.StructField(lr.FIT_WEIGHT, T.DoubleType()),
                           T.StructField("features", VectorUDT())])
    fitted = lr.fit_mllib(spark.createDataFrame(rows, schema), 0.01, 0.0, 20)
    assert type(fitted.coefficientMatrix).__name__ == "SparseMatrix"     # 47 of 4,096 used
    dense = lr.dense_mllib_model(fitted)
    assert type(dense.coefficientMatrix).__name__ == "DenseMatrix"
    assert lr.dense_mllib_model(dense) is dense
    features = spark.createDataFrame(rows, schema).select("review_id", "label", "features")
    as_fitted = lr.predict_mllib(fitted, features).orderBy("review_id").toPandas()
    scored = model_store.lr_predictor("mllib", fitted)(features).orderBy("review_id").toPandas()
    assert list(scored["pred"]) == list(as_fitted["pred"])
    np.testing.assert_allclose(np.vstack(scored["proba"]), np.vstack(as_fitted["proba"]),
                               atol=1e-12)
