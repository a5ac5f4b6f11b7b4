"""predict: batch-score reviews with a saved model inside Spark.

Input: predict.input — a reviews Parquet folder (prepare/reviews: `text` already cleaned;
ingest/reviews or any table with `body`: cleaned here with starscale.clean.clean_column and the
clean.* settings) or raw amazon_reviews_us TSV files (plain or .gz, with the 15-column header);
null means <run.output_dir>/prepare/reviews. The model: predict.model (lr | lstm) at
predict.model_dir (default models/lr_<lr.engine>/<tag> or models/lstm/<tag>).

Output: predict.output (default <run.output_dir>/predict/<model>_<tag>):
- ``predictions/``: ``review_id string, star int (the true star when the input has one, else
  null), pred_star int (1..5), proba array<double> (P(1★)..P(5★))``
- ``quarantine/`` (TSV input only): the quarantine table of docs/tables.md for lines that are
  not 15 tab-separated fields (reason ``field_count``); the header line is counted, not kept.
The manifest holds rows_in = predicted + quarantined (+ header lines).

LR: the encode run's fitted TF-IDF PipelineModel (encode/<tag>/tfidf_model, the encode_dir in the
model's manifest) turns text into the features the model was trained on; MLlib models score
natively, scikit-learn ones through a broadcast of their coefficients. LSTM: a pandas UDF
encodes texts with the model's vocabulary (starscale.encode.encode_texts, the code encode
runs) and calls Keras, loading the model once per executor Python process.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from starscale import ingest, layout, model_store, storage
from starscale.ingest import QUARANTINE_SCHEMA
from starscale.config import Config

TSV_FIELDS = 15
TSV_REVIEW_ID, TSV_STAR, TSV_BODY = 2, 7, 13       # 0-based positions in the 15-column header
PROBA_TYPE = T.ArrayType(T.DoubleType())


# --------------------------------------------------------------------------- input
def input_format(spark, path: str, declared: str) -> str:
    """tsv or parquet: as declared; else by name (.tsv / .gz / .txt → tsv, .parquet → parquet);
    else by the first file's first bytes (Parquet files start with PAR1; the make-corpus
    folder's part-0000N files have no extension)."""
    if declared != "auto":
        return declared
    name = path.rstrip("/").lower()
    if name.endswith((".tsv", ".tsv.gz", ".gz", ".txt")) or ("*" in name and ".tsv" in name):
        return "tsv"
    files = storage.list_files(spark, path)
    if not files:
        raise ValueError(f"predict.input: {path} is missing or has no files")
    first = files[0][0]
    if first.lower().endswith(".parquet"):
        return "parquet"
    if first.lower().endswith((".tsv", ".gz", ".txt")):
        return "tsv"
    head = spark.read.text(first).first()
    return "parquet" if head is not None and head["value"].startswith("PAR1") else "tsv"


def read_tsv_reviews(spark, path: str) -> tuple[DataFrame, DataFrame]:
    """Raw amazon_reviews_us TSV → (reviews: review_id, star, body; quarantine rows).

    Lines come through ingest's reader (ingest.read_raw_lines: split on LF only, so a stray CR
    stays inside its review; one trailing CR dropped; the header recognised with or without a
    BOM, wherever it appears). Minimal parsing for scoring: a line of 15 tab-separated fields is
    a review (a star outside 1..5 becomes null, it is not needed to predict); any other line
    goes to quarantine with reason field_count.
    """
    lines = (ingest.read_raw_lines(spark, path).select(
        F.input_file_name().alias("source_file"), F.col("value").alias("raw"),
        ingest.tsv_text(F.col("value")).alias("_text"))
        .withColumn("fields", F.split(F.col("_text"), "\t", -1)))
    body_lines = lines.where(~ingest.is_tsv_header(F.col("_text")))
    good = F.size(F.col("fields")) == TSV_FIELDS
    star_text = F.trim(F.col("fields")[TSV_STAR])
    reviews = body_lines.where(good).select(
        F.col("fields")[TSV_REVIEW_ID].alias("review_id"),
        F.when(star_text.rlike(r"^[1-5](\.0+)?$"), star_text.cast("double").cast("int"))
        .alias("star"),
        F.col("fields")[TSV_BODY].alias("body"))
    quarantine = body_lines.where(~good).select(
        F.col("source_file"), F.lit(None).alias("line_no"),
        F.when(F.size(F.col("fields")) > TSV_REVIEW_ID, F.col("fields")[TSV_REVIEW_ID])
        .alias("review_id"),
        F.lit("field_count").alias("reason"),
        F.concat(F.lit("fields="), F.size(F.col("fields")).cast("string")).alias("detail"),
        F.col("raw"))
    # the quarantine table of docs/tables.md: ingest's schema, the one definition
    quarantine = quarantine.select(*[F.col(f.name).cast(f.dataType)
                                     for f in QUARANTINE_SCHEMA.fields])
    return reviews, quarantine


def read_table_reviews(spark, path: str) -> tuple[DataFrame, bool]:
    """A reviews Parquet folder → (review_id, star, text-or-body, already_clean)."""
    columns = set(spark.read.parquet(path).columns)        # footer only, no data scan
    if "review_id" not in columns or not ({"text", "body"} & columns):
        raise ValueError(f"{path}: a reviews table needs review_id and text (prepare) or body "
                         f"(ingest); it has {sorted(columns)}")
    text_col = "text" if "text" in columns else "body"
    fields = [T.StructField("review_id", T.StringType()), T.StructField(text_col, T.StringType())]
    if "star" in columns:
        fields.append(T.StructField("star", T.IntegerType()))
    table = spark.read.schema(T.StructType(fields)).parquet(path)
    star = F.col("star") if "star" in columns else F.lit(None).cast("int")
    return table.select("review_id", star.alias("star"), F.col(text_col)), text_col == "text"


def cleaned(reviews: DataFrame, remove_stopwords: bool, lemmatize: bool) -> DataFrame:
    """review_id, star, body → review_id, star, text: the same cleaning as prepare."""
    from starscale.clean import clean_column
    return reviews.select("review_id", "star",
                          clean_column(F.col("body"), remove_stopwords, lemmatize).alias("text"))


# --------------------------------------------------------------------------- scoring
def score_lr(spark, reviews: DataFrame, model_dir: str, encode_dir: str | None) -> DataFrame:
    """review_id, star, text → review_id, star, pred_star, proba with a saved LR model."""
    model = model_store.load_lr(spark, model_dir)
    score = model.predictor
    encode_data = storage.data_dir(spark, model.manifest.get("encode_dir") or encode_dir)
    tfidf = model_store.load_tfidf_pipeline(spark, layout.join(encode_data, layout.TFIDF_MODEL))
    features = tfidf.transform(
        reviews.select("review_id", "star", F.coalesce(F.col("text"), F.lit("")).alias("text")))
    # label is only carried along; the scorers never read it
    scored = score(features.select("review_id", (F.col("star") - 1).alias("label"), "features"))
    return scored.select("review_id", (F.col("label") + 1).cast("int").alias("star"),
                         (F.col("pred") + 1).cast("int").alias("pred_star"), "proba")


def score_lstm(reviews: DataFrame, bundle: str, vocab: list[str], max_len: int,
               padding: str, truncating: str, batch_size: int) -> DataFrame:
    """review_id, star, text → review_id, star, pred_star, proba with a saved LSTM bundle
    (model_store.find_lstm_bundle's path).

    The bundle must be readable at the same local path on every executor (local mode,
    or a shared filesystem).
    """
    from starscale.encode import encode_texts, vocab_index
    index = reviews.sparkSession.sparkContext.broadcast(vocab_index(vocab))

    @F.pandas_udf(PROBA_TYPE)
    def lstm_proba(texts: pd.Series) -> pd.Series:
        ids = encode_texts(texts, index.value, max_len, padding, truncating)
        proba = model_store.lstm_proba(model_store.cached_lstm(bundle), ids, batch_size)
        return pd.Series(list(proba.astype(np.float64)))

    scored = reviews.select("review_id", "star", lstm_proba(F.col("text")).alias("proba"))
    return scored.select("review_id", "star",
                         F.expr("array_position(proba, array_max(proba))").cast("int")
                         .alias("pred_star"), "proba")


# --------------------------------------------------------------------------- stage
def _resolve_input(spark, cfg: Config) -> tuple[str, str, str, dict[str, str], list[str]]:
    """(path as configured, path to read, format, upstream {folder: producer}, raw inputs to
    fingerprint). A published folder (make-corpus's corpus/) or a table inside one
    (ingest/reviews) is read where its manifest points (storage.resolve) and depended on by
    its manifest rather than by file times."""
    if cfg.predict.input is None:
        prepare_dir = cfg.stage_dir("prepare")
        path = layout.join(prepare_dir, layout.REVIEWS)
        return (path, layout.join(storage.data_dir(spark, prepare_dir), layout.REVIEWS),
                "parquet", {prepare_dir: "prepare"}, [])
    path = cfg.predict.input
    full = storage.qualify(path).rstrip("/")
    for folder in (full, os.path.dirname(full)):
        if "*" in folder:
            continue
        manifest = storage.read_manifest(spark, folder)
        if manifest is not None:
            read = storage.resolve(folder, manifest) + full[len(folder):]
            return (path, read, input_format(spark, read, cfg.predict.input_format),
                    {folder: manifest.get("stage", "upstream")}, [])
    return path, path, input_format(spark, path, cfg.predict.input_format), {}, [path]


def _write_counted(spark, staging: str, path: str, predictions: DataFrame,
                   quarantine: DataFrame | None) -> dict[str, Any]:
    """Write predictions (+ quarantine) into staging; their counts, checked against the input:
    every line in is a prediction, a quarantined line or a header."""
    predictions.write.parquet(layout.join(staging, "predictions"))
    written = spark.read.parquet(layout.join(staging, "predictions"))
    by_star = {int(r["pred_star"]): int(r["count"])
               for r in written.groupBy("pred_star").count().collect()}
    counts: dict[str, Any] = {"predicted": sum(by_star.values()),
                              "pred_star_counts": {str(k): v for k, v in sorted(by_star.items())}}
    if quarantine is None:
        counts["rows_in"] = spark.read.parquet(path).count()
        if counts["rows_in"] != counts["predicted"]:
            raise RuntimeError(f"predict: {counts['rows_in']} rows in, {counts['predicted']} out")
        return counts
    quarantine.write.parquet(layout.join(staging, "quarantine"))
    counts["quarantined"] = spark.read.parquet(layout.join(staging, "quarantine")).count()
    lines = ingest.read_raw_lines(spark, path)       # the reader read_tsv_reviews used
    counts["header_lines"] = lines.where(
        ingest.is_tsv_header(ingest.tsv_text(F.col("value")))).count()
    counts["rows_in"] = lines.count()
    if counts["rows_in"] != counts["predicted"] + counts["quarantined"] + counts["header_lines"]:
        raise RuntimeError(f"predict: {counts['rows_in']} lines in but {counts['predicted']} "
                           f"predicted + {counts['quarantined']} quarantined + "
                           f"{counts['header_lines']} headers")
    return counts


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Score predict.input with the saved model; publish predictions (+ quarantine)."""
    pcfg = cfg.predict
    kind = pcfg.model
    tag = cfg.sample_tag()
    model_dir = pcfg.model_dir or layout.model_dir(cfg, kind)
    producer = model_store.PRODUCERS[kind]
    model_manifest = model_store.require(spark, kind, model_dir)
    name = layout.model_name(kind, model_manifest.get("engine"))
    output = layout.predict_dir(cfg, name)
    path, read_path, fmt, upstream, raw_inputs = _resolve_input(spark, cfg)
    upstream = {**upstream, model_dir: producer}
    if kind == "lr":   # the TF-IDF model that turns text into the LR's features
        upstream[model_manifest.get("encode_dir") or cfg.encode_dir()] = "encode"

    def write(staging: str) -> dict:
        quarantine = None
        if fmt == "tsv":
            raw_reviews, quarantine = read_tsv_reviews(spark, read_path)
            reviews = cleaned(raw_reviews, cfg.clean.remove_stopwords, cfg.clean.lemmatize)
        else:
            table, already_clean = read_table_reviews(spark, read_path)
            reviews = (table if already_clean else
                       cleaned(table, cfg.clean.remove_stopwords, cfg.clean.lemmatize))
        if kind == "lr":
            encode_dir = model_manifest.get("encode_dir") or cfg.encode_dir()
            predictions = score_lr(spark, reviews, model_dir, encode_dir)
        else:
            bundle = model_store.find_lstm_bundle(storage.resolve(model_dir, model_manifest))
            vocab, max_len, padding, truncating = model_store.lstm_text_settings(
                bundle, cfg.encode_dir(), cfg.encode.max_len, cfg.encode.padding,
                cfg.encode.truncating)
            predictions = score_lstm(reviews, bundle, vocab, max_len, padding, truncating,
                                     pcfg.batch_size)
        counts = _write_counted(spark, staging, read_path, predictions, quarantine)
        return {"model_kind": kind, "model_name": name, "model_dir": storage.qualify(model_dir),
                "input": storage.qualify(path), "input_format": fmt, "tag": tag, **counts}

    manifest = storage.run_stage(
        spark, stage="predict", output=output, config_hash=cfg.section_hash("predict", "clean"),
        config=cfg.to_dict(), upstream=upstream, raw_inputs=raw_inputs or None, force=force,
        write=write)
    return {k: manifest.get(k) for k in ("model_name", "input", "input_format", "rows_in",
                                         "predicted", "quarantined", "pred_star_counts",
                                         "output", "skipped") if k in manifest}
