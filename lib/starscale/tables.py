"""The tables between stages, in code: the schemas docs/tables.md specifies, read explicitly
by every downstream stage, and the ladder quotas the prepare manifest carries."""
from __future__ import annotations

from pyspark.ml.linalg import VectorUDT
from pyspark.sql.types import (ArrayType, DoubleType, IntegerType, LongType, StringType,
                               StructField, StructType)

from starscale import storage

# prepare/reviews: cleaned text, split, rank inside its star among train rows
PREPARE_REVIEWS_SCHEMA = StructType([
    StructField("review_id", StringType()),
    StructField("star", IntegerType()),
    StructField("text", StringType()),
    StructField("split", StringType()),
    StructField("class_rank", LongType()),
])
# sample/<tag>/train: resampled train rows
SAMPLE_TRAIN_SCHEMA = StructType([
    StructField("review_id", StringType()),
    StructField("star", IntegerType()),
    StructField("text", StringType()),
    StructField("weight", DoubleType()),
    StructField("copy", IntegerType()),
])
# encode/<etag>/sequences, partitioned by split and shard
SEQUENCES_SCHEMA = StructType([
    StructField("review_id", StringType()),
    StructField("label", IntegerType()),
    StructField("weight", DoubleType()),
    StructField("ids", ArrayType(IntegerType())),
    StructField("split", StringType()),
    StructField("shard", IntegerType()),
])
# encode/<etag>/features, partitioned by split
FEATURES_SCHEMA = StructType([
    StructField("review_id", StringType()),
    StructField("label", IntegerType()),
    StructField("weight", DoubleType()),
    StructField("features", VectorUDT()),
    StructField("split", StringType()),
])


def ladder_quota(manifest: dict, size: int | str, prepare_dir: str) -> dict[int, int] | None:
    """{star: quota} of ladder size `size` from the prepare manifest; None: all train rows
    ('full' without an entry of its own in the manifest)."""
    ladder = manifest.get("ladder")
    if not isinstance(ladder, dict):
        raise ValueError(f"{prepare_dir}/{storage.MANIFEST}: key 'ladder' missing; rerun prepare")
    quota = ladder.get(str(size))
    if quota is None:
        if size == "full":
            return None
        raise ValueError(f"sample.size: {size} has no ladder quota in {prepare_dir}/"
                         f"{storage.MANIFEST} (ladder has no size {size!r}; sizes there: "
                         f"{sorted(ladder, key=str)}); add it to ladder.sizes and rerun prepare")
    return {int(star): int(n) for star, n in quota.items()}
