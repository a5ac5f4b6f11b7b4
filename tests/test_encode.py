"""encode: vocabulary, padding, train shards, TF-IDF and the stage, on tiny hand-made data.

Expectations are written by hand or come from reference libraries (Keras pad_sequences,
scikit-learn), never from the code under test.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import (DoubleType, IntegerType, LongType, StringType, StructField,
                               StructType)

from starscale import encode, storage

TEXT_SCHEMA = StructType([StructField("review_id", StringType()),
                          StructField("text", StringType())])


# --------------------------------------------------------------------------- vocabulary
def test_compute_vocab_top_k_min_count_and_ties(spark):
    texts = ["a b c a", "b a d", "e a b", "f f", "zz yy zz yy"]
    df = spark.createDataFrame([(str(i), t) for i, t in enumerate(texts)], TEXT_SCHEMA)
    # counts: a 4, b 3, f 2, yy 2, zz 2, c/d/e 1; ties by string
    assert encode.compute_vocab(df, 6, 1) == ["<pad>", "<oov>", "a", "b", "f", "yy"]
    assert encode.compute_vocab(df, 9, 1) == ["<pad>", "<oov>", "a", "b", "f", "yy", "zz", "c", "d"]
    assert encode.compute_vocab(df, 100, 2) == ["<pad>", "<oov>", "a", "b", "f", "yy", "zz"]
    assert encode.compute_vocab(df, 100, 4) == ["<pad>", "<oov>", "a"]


def test_vocab_text_round_trip_and_bad_files():
    vocab = ["<pad>", "<oov>", "good", "bad"]
    assert encode.vocab_text(vocab) == "<pad>\n<oov>\ngood\nbad\n"
    assert encode.load_vocab("<pad>\n<oov>\ngood\nbad\n") == vocab
    assert encode.load_vocab("<pad>\n<oov>\ngood\nbad") == vocab       # storage.read_text form
    with pytest.raises(ValueError, match="line 1"):
        encode.load_vocab("good\n<pad>\n<oov>\n")
    with pytest.raises(ValueError, match="vocab.txt:4: token 'good' repeats line 3"):
        encode.load_vocab("<pad>\n<oov>\ngood\ngood\n")
    with pytest.raises(ValueError, match="vocab.txt:3"):
        encode.load_vocab("<pad>\n<oov>\n\nbad\n")


# --------------------------------------------------------------------------- sequences
@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_pad_sequences_matches_keras(padding, truncating):
    keras_pad = pytest.importorskip("tensorflow").keras.preprocessing.sequence.pad_sequences
    seqs = [[1, 2, 3, 4, 5], [6], [], [7, 8, 9], [10, 11]]
    for max_len in (1, 3, 6):
        expected = keras_pad(seqs, maxlen=max_len, padding=padding, truncating=truncating,
                             value=0, dtype="int32")
        got = encode.pad_sequences(seqs, max_len, padding, truncating)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


def test_pad_sequences_pre_truncation_keeps_the_last_ids():
    np.testing.assert_array_equal(encode.pad_sequences([[1, 2, 3, 4, 5]], 3, "post", "pre"),
                                  [[3, 4, 5]])
    with pytest.raises(ValueError, match="padding 'left'"):
        encode.pad_sequences([[1]], 3, "left", "pre")


VOCAB = ["<pad>", "<oov>", "good", "bad", "very"]
TEXTS = ["very good", "bad bad unknown very good", None, "", "good  bad", "<pad> <oov> bad"]
# by hand: very=4 good=2 bad=3 unknown=1(oov), literal '<pad>' too; max_len 3
EXPECTED_PRE_PRE = [[0, 4, 2], [1, 4, 2], [0, 0, 0], [0, 0, 0], [0, 2, 3], [1, 1, 3]]
EXPECTED_POST_POST = [[4, 2, 0], [3, 3, 1], [0, 0, 0], [0, 0, 0], [2, 3, 0], [1, 1, 3]]


def test_encode_texts_by_hand():
    import pandas as pd
    got = encode.encode_texts(pd.Series(TEXTS), VOCAB, 3, "pre", "pre")
    np.testing.assert_array_equal(got, EXPECTED_PRE_PRE)
    got = encode.encode_texts(TEXTS, encode.vocab_index(VOCAB), 3, "post", "post")
    np.testing.assert_array_equal(got, EXPECTED_POST_POST)


def test_spark_token_ids_agree_with_pandas_helper(spark):
    df = spark.createDataFrame([(str(i), t) for i, t in enumerate(TEXTS)], TEXT_SCHEMA)
    for (padding, truncating), expected in ((("pre", "pre"), EXPECTED_PRE_PRE),
                                            (("post", "post"), EXPECTED_POST_POST)):
        rows = (encode.with_token_ids(df.repartition(2), VOCAB, 3, padding, truncating)
                .select("review_id", "ids").collect())
        assert {r["review_id"]: list(r["ids"]) for r in rows} == \
            {str(i): e for i, e in enumerate(expected)}
    assert dict(encode.with_token_ids(df, VOCAB, 3, "pre", "pre").dtypes)["ids"] == "array<int>"


# --------------------------------------------------------------------------- shards
SHARD_SCHEMA = StructType([StructField("review_id", StringType()),
                           StructField("copy", IntegerType())])


def _shard_rows():
    rows = [(f"r{i:03d}", 0) for i in range(90)] + [(f"r{i:03d}", 1) for i in range(13)]
    return rows  # 103 rows: 4 shards of 25, remainder 3


def test_train_shards_equal_and_exact(spark):
    df = spark.createDataFrame(_shard_rows(), SHARD_SCHEMA)
    result = encode.compute_train_shards(df.repartition(5), seed=46, shards=4)
    got = {(r["review_id"], r["copy"]): r["shard"] for r in result.rows.collect()}
    result.cached.unpersist()
    assert (result.total, result.dropped) == (103, 3)
    assert sorted(np.bincount(list(got.values())).tolist()) == [25, 25, 25, 25]
    assert len(got) == 100 and set(got) <= set(_shard_rows())     # each row at most once
    # independent expectation: sort by (xxhash64, id, copy) in Python; position mod 4; last 3 out
    hashed = (df.select("review_id", "copy", F.xxhash64(F.lit(46), "review_id", "copy").alias("h"))
              .collect())
    order = sorted(hashed, key=lambda r: (r["h"], r["review_id"], r["copy"]))
    expected = {(r["review_id"], r["copy"]): pos % 4 for pos, r in enumerate(order[:100])}
    assert got == expected


def test_train_shards_do_not_depend_on_partitioning(spark):
    df = spark.createDataFrame(_shard_rows(), SHARD_SCHEMA)
    results = []
    for parts, ranges in ((1, None), (3, None), (3, 1), (2, 7)):
        result = encode.compute_train_shards(df.repartition(parts), seed=7, shards=3,
                                             ranges=ranges)
        results.append({(r["review_id"], r["copy"]): r["shard"] for r in result.rows.collect()})
        # the persisted sort keeps the partitions asked for (default: the input's, at least one
        # per core), never spark.sql.shuffle.partitions' 200
        assert result.cached.rdd.getNumPartitions() == (
            ranges or max(parts, spark.sparkContext.defaultParallelism)), (parts, ranges)
        result.cached.unpersist()
    assert all(r == results[0] for r in results[1:])
    assert len(results[0]) == 102    # 103 - 103 % 3


def test_hash_shards_cover_every_row_once(spark):
    df = spark.createDataFrame([(f"v{i}", 0) for i in range(50)], SHARD_SCHEMA)
    rows = encode.hash_shards(df, seed=46, shards=3).collect()
    assert len(rows) == 50 and {r["shard"] for r in rows} <= {0, 1, 2}


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight
    labels = np.array([0] * 5 + [2] * 3 + [4] * 12)
    expected = compute_class_weight("balanced", classes=np.array([0, 2, 4]), y=labels)
    got = encode.balanced_class_weights({0: 5, 1: 0, 2: 3, 4: 12})
    assert list(got) == [0, 2, 4]
    np.testing.assert_allclose(list(got.values()), expected)


# --------------------------------------------------------------------------- TF-IDF
TRAIN_TEXTS = ["good phone good battery", "bad phone", "good battery life", "bad bad screen",
               "great phone"]
TEST_TEXTS = ["zebra phone good", "zebra"]


def _tfidf_frames(spark):
    train = spark.createDataFrame([(f"t{i}", t) for i, t in enumerate(TRAIN_TEXTS)], TEXT_SCHEMA)
    test = spark.createDataFrame([(f"x{i}", t) for i, t in enumerate(TEST_TEXTS)], TEXT_SCHEMA)
    return train, test


def test_tfidf_fit_on_train_only_and_values_by_formula(spark):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    train, test = _tfidf_frames(spark)
    model = encode.tfidf_pipeline(ngram_max=2, num_features=1000, hashed=False).fit(train)
    vocabulary = model.stages[-3].vocabulary
    assert not any("zebra" in term for term in vocabulary)
    # every uni- and bigram of the train texts, nothing else
    reference = TfidfVectorizer(**encode.sklearn_tfidf_kwargs(2, 1000)).fit(TRAIN_TEXTS)
    assert set(vocabulary) == set(reference.vocabulary_) and "good phone" in vocabulary
    # Spark idf = ln((n+1)/(df+1)) = sklearn smooth idf − 1; features = L2(tf × idf)
    counts = CountVectorizer(lowercase=False, token_pattern=r"[^ ]+", ngram_range=(1, 2),
                             vocabulary=vocabulary)
    train_tf = counts.fit_transform(TRAIN_TEXTS).toarray()
    doc_freq = (train_tf > 0).sum(axis=0)
    idf = np.log((len(TRAIN_TEXTS) + 1) / (doc_freq + 1))
    sk_idf = reference.idf_[[reference.vocabulary_[t] for t in vocabulary]]
    np.testing.assert_allclose(idf, sk_idf - 1)
    for texts, frame in ((TRAIN_TEXTS, train), (TEST_TEXTS, test)):
        weighted = counts.transform(texts).toarray() * idf
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        expected = np.divide(weighted, norms, out=np.zeros_like(weighted), where=norms > 0)
        got = {r["review_id"]: r["features"].toArray()
               for r in model.transform(frame).select("review_id", "features").collect()}
        ids = [f"{'t' if frame is train else 'x'}{i}" for i in range(len(texts))]
        np.testing.assert_allclose(np.array([got[i] for i in ids]), expected, atol=1e-12)


def test_tfidf_count_mode_keeps_the_most_frequent_terms(spark):
    train, _ = _tfidf_frames(spark)
    model = encode.tfidf_pipeline(ngram_max=1, num_features=3, hashed=False).fit(train)
    # unigram counts by hand: good 3, phone 3, bad 3, battery 2, ...
    assert set(model.stages[-3].vocabulary) == {"good", "phone", "bad"}


def test_tfidf_hashed_2_pow_20(spark):
    train, test = _tfidf_frames(spark)
    model = encode.tfidf_pipeline(ngram_max=3, num_features=2 ** 20, hashed=True).fit(train)
    rows = model.transform(test.unionByName(train)).select("review_id", "features").collect()
    assert len(rows) == 7
    for row in rows:
        assert row["features"].size == 2 ** 20
        assert math.isclose(float(np.linalg.norm(row["features"].values)), 1.0, rel_tol=1e-9) \
            or row["features"].numNonzeros() == 0


def test_sklearn_kwargs_build_a_vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(**encode.sklearn_tfidf_kwargs(3, 4000))
    assert vec.get_params()["ngram_range"] == (1, 3) and vec.get_params()["norm"] == "l2"
    vec.fit(["a b", "a c"])  # single-character tokens are kept, as Spark keeps them
    assert set(vec.vocabulary_) == {"a", "b", "c", "a b", "a c"}


# --------------------------------------------------------------------------- stage
PREPARE_SCHEMA = StructType([
    StructField("review_id", StringType()), StructField("star", IntegerType()),
    StructField("text", StringType()), StructField("split", StringType()),
    StructField("class_rank", LongType())])
SAMPLE_SCHEMA = StructType([
    StructField("review_id", StringType()), StructField("star", IntegerType()),
    StructField("text", StringType()), StructField("weight", DoubleType()),
    StructField("copy", IntegerType())])

PREPARE_ROWS = [
    # ladder subset of size 8: star 1 ranks 0-2, star 5 ranks 0-4
    ("a1", 1, "bad awful", "train", 0), ("a2", 1, "bad product", "train", 1),
    ("a3", 1, "awful bad", "train", 2),
    ("b1", 5, "good great", "train", 0), ("b2", 5, "great good product", "train", 1),
    ("b3", 5, "good", "train", 2), ("b4", 5, "great value", "train", 3),
    ("b5", 5, "good value", "train", 4),
    # train but outside the ladder subset, validation and test: their words must not count
    ("b6", 5, "outsider outsider outsider", "train", 5), ("b7", 5, "outsider good", "train", 6),
    ("v1", 2, "valword valword valword valword valword", "validation", None),
    ("v2", 4, "good valword bad", "validation", None),
    ("x1", 3, "testword testword testword testword testword great", "test", None),
]
# resampled train: over-sampled star 1 (copies), 11 rows
SAMPLE_ROWS = [("a1", 1, "bad awful", 1.0, 0), ("a2", 1, "bad product", 1.0, 0),
               ("a3", 1, "awful bad", 1.0, 0), ("a1", 1, "bad awful", 1.0, 1),
               ("a3", 1, "awful bad", 1.0, 1), ("a2", 1, "bad product", 1.0, 1),
               ("b1", 5, "good great", 1.0, 0), ("b2", 5, "great good product", 1.0, 0),
               ("b3", 5, "good", 1.0, 0), ("b4", 5, "great value", 1.0, 0),
               ("b5", 5, "good value", 1.0, 0)]


def _publish_inputs(spark, cfg):
    def write_prepare(staging):
        spark.createDataFrame(PREPARE_ROWS, PREPARE_SCHEMA).write.parquet(staging + "/reviews")
        return {"ladder": {"8": {"1": 3, "5": 5}, "full": {"1": 3, "5": 7}}}

    def write_sample(staging):
        spark.createDataFrame(SAMPLE_ROWS, SAMPLE_SCHEMA).write.parquet(staging + "/train")
        return {"class_counts_after": {"1": 6, "5": 5}}

    storage.publish(spark, cfg.stage_dir("prepare"), write_prepare, {"stage": "prepare"})
    storage.publish(spark, os.path.join(cfg.stage_dir("sample"), cfg.sample_tag()),
                    write_sample, {"stage": "sample"})


def test_ladder_quota_from_manifest():
    from starscale.tables import ladder_quota
    manifest = {"ladder": {"8": {"1": 3, "5": 5}, "full": {"1": 3, "5": 7}}}
    assert ladder_quota(manifest, 8, "p") == {1: 3, 5: 5}
    assert ladder_quota(manifest, "full", "p") == {1: 3, 5: 7}
    assert ladder_quota({"ladder": {}}, "full", "p") is None
    with pytest.raises(ValueError, match="ladder has no size 16"):
        ladder_quota(manifest, 16, "p")
    with pytest.raises(ValueError, match="key 'ladder' missing"):
        ladder_quota({}, 8, "p")


def test_encode_stage_end_to_end(spark, config_factory):
    from sklearn.utils.class_weight import compute_class_weight
    from starscale.stages import encode as stage

    cfg = config_factory("ladder.sizes=[8, full]", "sample.size=8", "sample.method=random_over",
                         "encode.vocab_size=6", "encode.min_count=2", "encode.max_len=4",
                         "encode.shards=3", "encode.tfidf_features=50",
                         "encode.tfidf_ngram_max=2")
    _publish_inputs(spark, cfg)
    summary = stage.run(spark, cfg)
    out = os.path.join(cfg.stage_dir("encode"), "8_random_over_top50")  # cfg.encode_tag(): tfidf_features=50

    # by hand over the 8 ladder rows: good 4, bad 3, great 3, then awful/product/value 2 → awful
    vocab = encode.load_vocab(storage.read_text(spark, out + "/vocab.txt"))
    assert vocab == ["<pad>", "<oov>", "good", "bad", "great", "awful"]

    manifest = json.loads(open(os.path.join(out, storage.MANIFEST)).read())
    assert manifest["rows"] == {"train": {"0": 3, "1": 3, "2": 3},
                                "validation": manifest["rows"]["validation"],
                                "test": {"0": 1}}
    assert sum(manifest["rows"]["validation"].values()) == 2
    assert (manifest["train_rows_in"], manifest["train_remainder_dropped"]) == (11, 2)
    assert manifest["vocab_size"] == 6 and manifest["fit_rows"] == 8
    assert manifest["features_rows"] == {"train": 11, "validation": 2, "test": 1}

    seqs = spark.read.parquet(out + "/sequences")
    assert dict(seqs.dtypes) == {"review_id": "string", "label": "int", "weight": "double",
                                 "ids": "array<int>", "split": "string", "shard": "int"}
    rows = seqs.collect()
    by_id = {r["review_id"]: r for r in rows if r["split"] != "train"}
    assert list(by_id["v2"]["ids"]) == [0, 2, 1, 3]        # good valword bad, pre-padded
    assert list(by_id["x1"]["ids"]) == [1, 1, 1, 4]        # pre-truncated: last 4 tokens
    assert (by_id["v2"]["label"], by_id["x1"]["label"], by_id["x1"]["shard"]) == (3, 2, 0)
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 9 and all(len(r["ids"]) == 4 for r in rows)
    # by hand with vocab good=2 bad=3 great=4 awful=5 (product, value: OOV)
    hand = {"a1": [0, 0, 3, 5], "a2": [0, 0, 3, 1], "a3": [0, 0, 5, 3], "b1": [0, 0, 2, 4],
            "b2": [0, 4, 2, 1], "b3": [0, 0, 0, 2], "b4": [0, 0, 4, 1], "b5": [0, 0, 2, 1]}
    for r in train:
        assert list(r["ids"]) == hand[r["review_id"]]
        assert r["label"] == (0 if r["review_id"].startswith("a") else 4)
    # each (review, copy) at most once: no id appears more often than its copies in sample
    copies = {rid: sum(1 for s in SAMPLE_ROWS if s[0] == rid) for rid in hand}
    assert all(sum(1 for r in train if r["review_id"] == rid) <= n for rid, n in copies.items())
    labels = np.array([r["label"] for r in train])
    expected_w = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
    assert manifest["class_weights_balanced"] == pytest.approx(
        {str(c): w for c, w in zip(np.unique(labels), expected_w)})

    model = encode.load_tfidf_model(out + "/tfidf_model")
    terms = model.stages[-3].vocabulary
    assert not any(w in t for t in terms for w in ("outsider", "valword", "testword"))
    assert manifest["tfidf_features"] == len(terms)
    feats = spark.read.parquet(out + "/features")
    assert sorted(feats.columns) == ["features", "label", "review_id", "split", "weight"]

    again = stage.run(spark, cfg)
    assert again["skipped"] is True and summary["skipped"] is False
