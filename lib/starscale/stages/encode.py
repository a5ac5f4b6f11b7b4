"""encode: vocabulary, padded token-id shards and TF-IDF features, all fit on train only.

Input: <run.output_dir>/prepare (reviews/ + manifest with the ladder quotas) and
<run.output_dir>/sample/<tag>/train. Output: <run.output_dir>/encode/<tag>/ (docs/tables.md):
vocab.txt, sequences/ (split=/shard=), tfidf_model/, features/ (split=) and the manifest.

The vocabulary and the TF-IDF model are fit on the ladder subset of train of size sample.size
(before resampling: replicas would only inflate counts, and validation/test text never
enters); sequences and features cover the resampled train rows, validation and test.
"""
from __future__ import annotations


from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from starscale import encode, layout, partitions, storage
from starscale.split import ladder_subset
from starscale.tables import PREPARE_REVIEWS_SCHEMA, SAMPLE_TRAIN_SCHEMA, ladder_quota
from starscale.config import Config, EncodeConfig

SPLITS = ("train", "validation", "test")


def _labelled(df: DataFrame, split: str, weight: Column, *extra: str) -> DataFrame:
    """review_id, label (star − 1), weight, text (null → ''), split, *extra."""
    return df.select(
        F.col("review_id"),
        (F.col("star") - 1).cast("int").alias("label"),
        weight.cast("double").alias("weight"),
        F.coalesce(F.col("text"), F.lit("")).alias("text"),
        F.lit(split).alias("split"),
        *[F.col(c) for c in extra],
    )


def _counts(df: DataFrame, *cols: str) -> dict:
    return {tuple(row[c] for c in cols): row["count"]
            for row in df.groupBy(*cols).count().collect()}


def held_out_rows(reviews: DataFrame, rows: int) -> DataFrame:
    """prepare's validation and test rows (`rows` of them) spread over even tasks
    (partitions.spread): they sit in a few of prepare's files, which only as many tasks can
    read."""
    return partitions.spread(reviews.where(F.col("split").isin("validation", "test")), rows)


def write_sequences(spark, staging: str, sampled: DataFrame, reviews: DataFrame,
                    vocab: list[str], ecfg: EncodeConfig, source: str) -> dict:
    """sequences/ (split=/shard=) from the resampled train rows and prepare's validation/test;
    returns the manifest counts, checked against the inputs."""
    train = _labelled(sampled, "train", F.col("weight"), "copy")
    shards = encode.compute_train_shards(train, ecfg.seed, ecfg.shards)
    try:
        if shards.total < ecfg.shards:
            raise ValueError(f"{source}: {shards.total} train rows, fewer than encode.shards="
                             f"{ecfg.shards}; every shard would be empty")
        split_counts = {k[0]: n for k, n in _counts(reviews, "split").items()}
        held_out = held_out_rows(reviews, split_counts.get("validation", 0)
                                 + split_counts.get("test", 0))
        validation = encode.hash_shards(
            _labelled(held_out.where(F.col("split") == "validation"), "validation", F.lit(1.0)),
            ecfg.seed, ecfg.shards)
        test = (_labelled(held_out.where(F.col("split") == "test"), "test", F.lit(1.0))
                .withColumn("shard", F.lit(0)))
        columns = ["review_id", "label", "weight", "text", "split", "shard"]
        unioned = (shards.rows.select(*columns)
                   .unionByName(validation.select(*columns))
                   .unionByName(test.select(*columns)))
        sequences = encode.with_token_ids(unioned, vocab, ecfg.max_len, ecfg.padding,
                                          ecfg.truncating)
        (sequences.select("review_id", "label", "weight", "ids", "split", "shard")
         .write.partitionBy("split", "shard").parquet(staging + "/sequences"))
    finally:
        shards.cached.unpersist()

    # counts from what was written, so the manifest describes the published files
    written = spark.read.parquet(staging + "/sequences")
    per_shard = _counts(written, "split", "shard")
    rows = {split: {str(s): per_shard.get((split, s), 0)
                    for s in range(ecfg.shards if split != "test" else 1)}
            for split in SPLITS}
    train_sizes = set(rows["train"].values())
    if len(train_sizes) != 1 or sum(rows["train"].values()) != shards.total - shards.dropped:
        raise RuntimeError(f"encode: train shards {rows['train']} are not equal or do not "
                           f"add up to {shards.total} - {shards.dropped}")
    for split in ("validation", "test"):
        if sum(rows[split].values()) != split_counts.get(split, 0):
            raise RuntimeError(f"encode: wrote {sum(rows[split].values())} {split} rows, "
                               f"{source} has {split_counts.get(split, 0)}")
    label_counts = {k[0]: n for k, n in
                    _counts(written.where(F.col("split") == "train"), "label").items()}
    return {
        "rows": rows,
        "train_rows_in": shards.total,
        "train_remainder_dropped": shards.dropped,
        "train_rows_per_shard": next(iter(train_sizes)),
        "label_counts_train": {str(k): v for k, v in sorted(label_counts.items())},
        "class_weights_balanced": {str(k): w for k, w in
                                   encode.balanced_class_weights(label_counts).items()},
        "rows_by_split_in": {split: (shards.total if split == "train"
                                     else split_counts.get(split, 0)) for split in SPLITS},
    }


def write_features(spark, staging: str, fit_rows: DataFrame, sampled: DataFrame,
                   reviews: DataFrame, ecfg: EncodeConfig, rows_in: int) -> dict:
    """Fit the TF-IDF pipeline on fit_rows, save it as tfidf_model/ and write features/ (split=)
    for the resampled train rows, validation and test (rows_in rows, counted by
    write_sequences); returns the manifest counts."""
    pipeline = encode.tfidf_pipeline(ecfg.tfidf_ngram_max, ecfg.tfidf_features,
                                     ecfg.tfidf_hashed)
    model = pipeline.fit(fit_rows)
    encode.save_tfidf_model(model, staging + "/tfidf_model")
    to_score = (_labelled(sampled, "train", F.col("weight"))
                .unionByName(_labelled(reviews.where(F.col("split") == "validation"),
                                       "validation", F.lit(1.0)))
                .unionByName(_labelled(reviews.where(F.col("split") == "test"),
                                       "test", F.lit(1.0))))
    # the resampled train rows and prepare's held-out rows come in a few files: score all
    # rows_in of them in even tasks (one shuffle of the text rows)
    to_score = partitions.spread(to_score, rows_in)
    (model.transform(to_score)
     .select("review_id", "label", "weight", "features", "split")
     .write.partitionBy("split").parquet(staging + "/features"))
    feature_rows = {k[0]: n for k, n in
                    _counts(spark.read.parquet(staging + "/features"), "split").items()}
    counter = model.stages[-3]   # CountVectorizerModel or HashingTF
    return {
        "fit_rows": model.stages[-2].numDocs,   # the IDF saw every fitting row
        "tfidf_features": (ecfg.tfidf_features if ecfg.tfidf_hashed
                           else len(counter.vocabulary)),
        "tfidf_hashed": ecfg.tfidf_hashed,
        "tfidf_ngram_max": ecfg.tfidf_ngram_max,
        "features_rows": {split: feature_rows.get(split, 0) for split in SPLITS},
    }


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Fit vocabulary + TF-IDF on the train ladder subset, write sequences and features."""
    ecfg = cfg.encode
    tag = cfg.sample_tag()
    prepare_dir = cfg.stage_dir("prepare")
    sample_dir = cfg.sample_dir()
    output = cfg.encode_dir()

    def write(staging: str) -> dict:
        prepare_manifest = storage.require_manifest(spark, prepare_dir, "prepare")
        quota = ladder_quota(prepare_manifest, cfg.sample.size, prepare_dir)
        reviews = spark.read.schema(PREPARE_REVIEWS_SCHEMA).parquet(
            layout.join(storage.resolve(prepare_dir, prepare_manifest), layout.REVIEWS))
        sampled_table = layout.join(storage.data_dir(spark, sample_dir), layout.TRAIN)
        sampled = spark.read.schema(SAMPLE_TRAIN_SCHEMA).parquet(sampled_table)
        # read three times (vocabulary, CountVectorizer, IDF): keep it, on local disk (up to
        # the whole train text at full size: never in the JVM heap)
        fit_rows = (ladder_subset(reviews, quota)
                    .select(F.coalesce(F.col("text"), F.lit("")).alias("text"))
                    .persist(StorageLevel.DISK_ONLY))
        try:
            vocab = encode.compute_vocab(fit_rows, ecfg.vocab_size, ecfg.min_count)
            if len(vocab) <= 2:
                raise ValueError(f"{prepare_dir}/reviews: the train ladder subset of size "
                                 f"{cfg.sample.size} has no token with count >= "
                                 f"{ecfg.min_count} (encode.min_count)")
            storage.write_text(spark, staging + "/vocab.txt", encode.vocab_text(vocab))
            seq_info = write_sequences(spark, staging, sampled, reviews, vocab, ecfg,
                                       sampled_table)
            feature_info = write_features(spark, staging, fit_rows, sampled, reviews, ecfg,
                                          sum(seq_info["rows_by_split_in"].values()))
        finally:
            fit_rows.unpersist()
        if feature_info["features_rows"] != seq_info["rows_by_split_in"]:
            raise RuntimeError(f"encode: features rows {feature_info['features_rows']} differ "
                               f"from the input rows {seq_info['rows_by_split_in']}")
        return {
            "tag": tag,
            "ladder_size": cfg.sample.size,
            "ladder_quota": {str(k): v for k, v in sorted(quota.items())} if quota else None,
            "vocab_size": len(vocab),
            "max_len": ecfg.max_len,
            "padding": ecfg.padding,
            "truncating": ecfg.truncating,
            "shards": ecfg.shards,
            **seq_info,
            **feature_info,
        }

    return storage.run_stage(
        spark, stage="encode", output=output,
        config_hash=cfg.section_hash("encode", "sample", "ladder"),
        config=cfg.to_dict(),
        upstream={prepare_dir: "prepare", sample_dir: "sample"}, force=force, write=write)
