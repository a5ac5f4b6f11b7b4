"""prepare: clean the text, drop duplicate texts, split train/validation/test, rank train.

Input: <run.output_dir>/ingest/reviews (docs/tables.md; its manifest is required).
Output: <run.output_dir>/prepare/reviews (review_id, star, text, split, class_rank) and
prepare/quarantine (reasons empty_after_clean, duplicate_text); the manifest holds the counts
per split and star, the quarantine counts by reason and the ladder quotas {size: {star: n}}.
Every input row is in exactly one of the two tables (checked before publishing).
"""
from __future__ import annotations

import dataclasses

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (DateType, IntegerType, LongType, StringType, StructField,
                               StructType)

from starscale import storage
from starscale.clean import clean_column
from starscale.config import Config
from starscale.split import (SPLITS, add_class_rank, assign_split, ladder_quotas,
                             mark_duplicate_texts)

INGEST_REVIEWS_SCHEMA = StructType([
    StructField("review_id", StringType()),
    StructField("star", IntegerType()),
    StructField("body", StringType()),
    StructField("headline", StringType()),
    StructField("product_id", StringType()),
    StructField("product_parent", StringType()),
    StructField("product_title", StringType()),
    StructField("product_category", StringType()),
    StructField("customer_id", StringType()),
    StructField("marketplace", StringType()),
    StructField("helpful_votes", IntegerType()),
    StructField("total_votes", IntegerType()),
    StructField("vine", StringType()),
    StructField("verified_purchase", StringType()),
    StructField("review_date", DateType()),
    StructField("source_file", StringType()),
    StructField("line_no", LongType()),
])

PREPARE_REVIEWS_COLUMNS = ("review_id", "star", "text", "split", "class_rank")
QUARANTINE_COLUMNS = ("source_file", "line_no", "review_id", "reason", "detail", "raw")
EMPTY_DETAIL = "the body is empty after cleaning"


def clean_reviews(reviews: DataFrame, remove_stopwords: bool, lemmatize: bool) -> DataFrame:
    """Ingest reviews → review_id, star, text (cleaned), source_file, line_no, body."""
    return reviews.select(
        F.col("review_id"), F.col("star"),
        clean_column("body", remove_stopwords, lemmatize).alias("text"),
        F.col("source_file"), F.col("line_no"), F.col("body"))


def to_quarantine(rows: DataFrame, reason: str, detail) -> DataFrame:
    """Rows with source_file, line_no, review_id, body → the quarantine table's columns."""
    return rows.select(
        F.col("source_file"), F.col("line_no"), F.col("review_id"),
        F.lit(reason).alias("reason"), detail.cast("string").alias("detail"),
        F.col("body").alias("raw"))


def prepare_tables(reviews: DataFrame, *, remove_stopwords: bool, lemmatize: bool,
                   train: float, validation: float, split_seed: int,
                   ladder_seed: int) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Ingest reviews → (flagged, prepared reviews, quarantine).

    `flagged` is the cleaned and dedupe-marked frame both outputs derive from: persist it so
    the text is cleaned once. Empty texts are grouped like any text but leave as
    empty_after_clean whatever their duplicate mark.
    """
    flagged = mark_duplicate_texts(clean_reviews(reviews, remove_stopwords, lemmatize))
    empty = F.col("text") == ""
    duplicate = ~empty & F.col("_is_duplicate")
    quarantine = (to_quarantine(flagged.where(empty), "empty_after_clean", F.lit(EMPTY_DETAIL))
                  .unionByName(to_quarantine(flagged.where(duplicate), "duplicate_text",
                                             F.col("kept_review_id"))))
    kept = flagged.where(~empty & ~F.col("_is_duplicate")).select("review_id", "star", "text")
    prepared = add_class_rank(assign_split(kept, train, validation, split_seed), ladder_seed)
    return flagged, prepared.select(*PREPARE_REVIEWS_COLUMNS), quarantine


def compute_split_counts(prepared: DataFrame) -> dict[str, dict[str, int]]:
    """{split: {star: rows}} of prepared reviews (every split present, maybe empty)."""
    rows = prepared.groupBy("split", "star").count().collect()
    out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for row in sorted(rows, key=lambda r: (r["split"], r["star"])):
        out[row["split"]][str(row["star"])] = int(row["count"])
    return out


def compute_reason_counts(quarantine: DataFrame) -> dict[str, int]:
    """{reason: rows} of a quarantine table."""
    return {r["reason"]: int(r["count"])
            for r in sorted(quarantine.groupBy("reason").count().collect(),
                            key=lambda r: r["reason"])}


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Publish prepare/ from ingest/; return the manifest (skipped when up to date)."""
    ingest_dir = cfg.stage_dir("ingest")
    output = cfg.stage_dir("prepare")

    def write(staging: str) -> dict:
        reviews = spark.read.schema(INGEST_REVIEWS_SCHEMA).parquet(ingest_dir + "/reviews")
        flagged, prepared, quarantine = prepare_tables(
            reviews, remove_stopwords=cfg.clean.remove_stopwords, lemmatize=cfg.clean.lemmatize,
            train=cfg.split.train, validation=cfg.split.validation, split_seed=cfg.split.seed,
            ladder_seed=cfg.ladder.seed)
        flagged.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            prepared.write.mode("overwrite").parquet(staging + "/reviews")
            quarantine.write.mode("overwrite").parquet(staging + "/quarantine")
        finally:
            flagged.unpersist()
        # counts from what was written, so the manifest describes the published files
        rows_in = reviews.count()
        split_counts = compute_split_counts(spark.read.parquet(staging + "/reviews"))
        reasons = compute_reason_counts(spark.read.parquet(staging + "/quarantine"))
        rows_out = sum(n for stars in split_counts.values() for n in stars.values())
        quarantined = sum(reasons.values())
        if rows_in != rows_out + quarantined:
            raise RuntimeError(f"prepare: {rows_in} rows in but {rows_out} written + "
                               f"{quarantined} quarantined")
        train_counts = {int(star): n for star, n in split_counts["train"].items()}
        for star in range(1, 6):
            train_counts.setdefault(star, 0)
        ladder, clipped = ladder_quotas(train_counts, cfg.ladder.sizes)
        return {
            "rows_in": rows_in,
            "rows_out": rows_out,
            "quarantined": quarantined,
            "quarantine_by_reason": reasons,
            "counts": split_counts,
            "rows_by_split": {s: sum(stars.values()) for s, stars in split_counts.items()},
            "ladder": ladder,
            "ladder_clipped": clipped,
            "dedupe_rule": "one row per cleaned text: the smallest review_id is kept",
        }

    return storage.run_stage(
        spark, stage="prepare", output=output,
        config_hash=cfg.section_hash("clean", "split", "ladder"),
        config={name: dataclasses.asdict(getattr(cfg, name))
                for name in ("clean", "split", "ladder")},
        upstream={ingest_dir: "ingest"}, force=force, write=write)
