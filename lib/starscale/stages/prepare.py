"""prepare: clean the text, drop duplicate texts, split train/validation/test, rank train.

Input: <run.output_dir>/ingest/reviews (docs/tables.md; its manifest is required).
Output: <run.output_dir>/prepare/reviews (review_id, star, text, split, class_rank) and
prepare/quarantine (reasons empty_after_clean, duplicate_text); the manifest holds the counts
per split and star, the quarantine counts by reason and the ladder quotas {size: {star: n}}.
Every input row is in exactly one of the two tables (checked before publishing).
"""
from __future__ import annotations

import dataclasses

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from starscale import ingest, joins, layout, partitions, split, storage
from starscale.clean import with_clean_text
from starscale.config import Config
from starscale.split import SPLITS

PREPARE_REVIEWS_COLUMNS = ("review_id", "star", "text", "split", "class_rank")
EMPTY_DETAIL = "the body is empty after cleaning"


def clean_reviews(reviews: DataFrame, remove_stopwords: bool, lemmatize: bool) -> DataFrame:
    """Ingest reviews → review_id, star, source_file, line_no, text (cleaned). The body stays
    behind: only quarantined rows need it, and they fetch it by review_id (raw_bodies)."""
    return with_clean_text(reviews, "body", ["review_id", "star", "source_file", "line_no"],
                           remove_stopwords, lemmatize)


def flag_texts(reviews: DataFrame, remove_stopwords: bool, lemmatize: bool) -> DataFrame:
    """Ingest reviews → cleaned and dedupe-marked rows (mark_duplicate_texts): what both
    outputs derive from; persist it so the text is cleaned once."""
    return split.mark_duplicate_texts(clean_reviews(reviews, remove_stopwords, lemmatize))


def kept_rows(flagged: DataFrame, train: float, validation: float, split_seed: int) -> DataFrame:
    """Rows that are neither empty nor duplicates, with their split: review_id, star, text,
    split."""
    return split.assign_split(
        flagged.where((F.col("text") != "") & ~F.col("_is_duplicate"))
        .select("review_id", "star", "text"), train, validation, split_seed)


def quarantined_rows(flagged: DataFrame) -> DataFrame:
    """source_file, line_no, review_id, reason, detail of the rows prepare removes. Empty texts
    are grouped like any text but leave as empty_after_clean whatever their duplicate mark."""
    empty = F.col("text") == ""
    reason = F.when(empty, F.lit("empty_after_clean")).otherwise(F.lit("duplicate_text"))
    detail = F.when(empty, F.lit(EMPTY_DETAIL)).otherwise(F.col("kept_review_id"))
    return (flagged.where(empty | F.col("_is_duplicate"))
            .select(F.col("source_file"), F.col("line_no"), F.col("review_id"),
                    reason.alias("reason"), detail.cast("string").alias("detail")))


def raw_bodies(quarantined: DataFrame, reviews: DataFrame, broadcast: bool) -> DataFrame:
    """Quarantined rows + raw (their ingest body), in the quarantine table's columns. review_id
    is unique in ingest/reviews, so each quarantined row meets exactly one body."""
    rows = F.broadcast(quarantined) if broadcast else quarantined
    return (reviews.select(F.col("review_id"), F.col("body").alias("raw"))
            .join(rows, on="review_id", how="inner")
            .select(*[f.name for f in ingest.QUARANTINE_SCHEMA.fields]))


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


def write_tables(reviews: DataFrame, staging: str, *, remove_stopwords: bool, lemmatize: bool,
                 train: float, validation: float, split_seed: int, ladder_seed: int) -> None:
    """Ingest reviews → staging/reviews and staging/quarantine. Jobs: the ladder's bucket
    counts (which also materialise the flagged rows on local disk), the reviews, the size of
    the quarantine, the quarantine. Shuffles: the texts (dedupe) and train rows by (star,
    bucket); nothing wide is held in the heap."""
    # the texts' shuffle (dedupe) in as many partitions as the input (sized from its bytes)
    flagged = partitions.persist_coalesced(flag_texts(reviews, remove_stopwords, lemmatize),
                                           partitions.sized_like(reviews))
    try:
        kept = kept_rows(flagged, train, validation, split_seed)
        buckets = split.compute_ladder_buckets(kept, ladder_seed)
        (split.add_class_rank(kept, ladder_seed, buckets).select(*PREPARE_REVIEWS_COLUMNS)
         .write.mode("overwrite").parquet(staging + "/reviews"))
        quarantined = quarantined_rows(flagged)
        # quarantined rows pick up their raw body by a broadcast when few (joins.broadcast_ok)
        small = joins.broadcast_ok(quarantined.count())
        (raw_bodies(quarantined, reviews, broadcast=small)
         .write.mode("overwrite").parquet(staging + "/quarantine"))
    finally:
        flagged.unpersist()


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Publish prepare/ from ingest/; return the manifest (skipped when up to date)."""
    ingest_dir = cfg.stage_dir("ingest")
    output = cfg.stage_dir("prepare")

    def write(staging: str) -> dict:
        reviews = spark.read.schema(ingest.REVIEWS_SCHEMA).parquet(
            layout.join(storage.data_dir(spark, ingest_dir), layout.REVIEWS))
        write_tables(reviews, staging, remove_stopwords=cfg.clean.remove_stopwords,
                     lemmatize=cfg.clean.lemmatize, train=cfg.split.train,
                     validation=cfg.split.validation, split_seed=cfg.split.seed,
                     ladder_seed=cfg.ladder.seed)
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
        ladder, clipped = split.ladder_quotas(train_counts, cfg.ladder.sizes)
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
