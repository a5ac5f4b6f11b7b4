"""sample: resample one ladder subset of the train split.

Input: <run.output_dir>/prepare (reviews/ + manifest with the ladder quotas).
Output: <run.output_dir>/sample/<size>_<method>/train (docs/tables.md) + manifest with
class_counts_before, class_counts_after and class_weights_balanced (of the rows written).
Validation and test rows are never resampled and are not part of this output.
"""
from __future__ import annotations

import dataclasses

from starscale import layout, rank, resample, storage
from starscale.config import Config
from starscale.split import ladder_subset
from starscale.tables import PREPARE_REVIEWS_SCHEMA, ladder_quota


ADASYN_NOTE = ("rows pass through unchanged (weight 1, copy 0): ADASYN synthesizes feature "
               "vectors, so the LR trainer applies starscale.resample.adasyn_resample to the "
               "TF-IDF features of these rows")


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Resample the ladder subset of size sample.size with sample.method; return the summary."""
    scfg = cfg.sample
    if scfg.size not in cfg.ladder.sizes:
        raise ValueError(f"sample.size: {scfg.size!r} is not one of ladder.sizes "
                         f"{cfg.ladder.sizes}")
    prepare_dir = cfg.stage_dir("prepare")
    output = cfg.sample_dir()
    quota = ladder_quota(storage.require_manifest(spark, prepare_dir, "prepare"),
                         scfg.size, prepare_dir)

    def write(staging: str) -> dict:
        reviews = spark.read.schema(PREPARE_REVIEWS_SCHEMA).parquet(
            layout.join(storage.data_dir(spark, prepare_dir), layout.REVIEWS))
        train_reviews = ladder_subset(reviews, quota).select("review_id", "star", "text")
        # one small job: rows per (star, hash bucket), which gives the class counts and lets
        # the samplers select rows without ranking a whole class in one task
        buckets = resample.compute_rank_buckets(train_reviews, scfg.seed)
        before = rank.class_totals(buckets)
        if not before:
            raise ValueError(f"sample.size={scfg.size}: the ladder subset of train in "
                             f"{prepare_dir}/reviews is empty")
        # adasyn's targets are only recorded here (and validate the strategy early)
        targets = resample.target_counts(before, scfg.method, scfg.strategy)
        sampled = resample.resample(train_reviews, scfg.method, before, targets, scfg.seed,
                                    buckets)
        sampled.write.mode("overwrite").parquet(staging + "/train")
        written = spark.read.parquet(staging + "/train")
        after = resample.compute_class_counts(written)
        expected = before if scfg.method == "adasyn" else targets
        if after != {k: n for k, n in expected.items() if n > 0}:
            raise RuntimeError(f"sample: wrote class counts {after}, expected {expected}")
        produced = {
            "size": scfg.size,
            "method": scfg.method,
            "strategy": _jsonable(scfg.strategy),
            "seed": scfg.seed,
            "ladder_quota": _jsonable(quota),
            "rows_before": sum(before.values()),
            "rows_after": sum(after.values()),
            "class_counts_before": _jsonable(before),
            "class_counts_after": _jsonable(after),
            "class_weights_balanced": _jsonable(resample.balanced_class_weights(after)),
            "over_sampling": "stratified replication" if scfg.method == "random_over" else None,
        }
        if scfg.method == "adasyn":
            produced["adasyn"] = {"applied_by": "train-lr", "note": ADASYN_NOTE,
                                  "target_counts": _jsonable(targets),
                                  "max_rows": scfg.adasyn_max_rows}
        return produced

    return storage.run_stage(
        spark, stage="sample", output=output,
        config_hash=cfg.section_hash("sample", "ladder"),
        config={"sample": dataclasses.asdict(scfg), "ladder": dataclasses.asdict(cfg.ladder)},
        upstream={prepare_dir: "prepare"}, force=force, write=write)


def _jsonable(mapping):
    """Star-keyed dicts with string keys, so a fresh and a re-read manifest look the same."""
    if isinstance(mapping, dict):
        return {str(k): v for k, v in sorted(mapping.items(), key=lambda kv: int(kv[0]))}
    return mapping
