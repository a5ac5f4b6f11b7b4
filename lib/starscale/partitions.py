"""How many partitions a persisted shuffle output keeps, and how rows that sit in a few large
files are spread over enough tasks.

AQE merges a shuffle's small partitions (conf/base.yaml: up to 64 MB each) only in the plans it
runs itself. A frame that is persisted after a shuffle keeps every one of
spark.sql.shuffle.partitions (200) partitions, even with
spark.sql.optimizer.canChangeCachedPlanOutputPartitioning on (measured on Spark 3.5.x: an
aggregate of 50k keys runs as 1 task unpersisted and as 200 tasks persisted), and every later
job that reads it pays 200 tasks: millisecond tasks whose max/median time is noise (issue 14's
skew target, docs/scale.md). persist_coalesced narrows such a frame first: a coalesce is not a
shuffle, each of its tasks reads a run of the shuffle's partitions one after another, so the
memory a task needs per partition does not change.
"""
from __future__ import annotations

import math

from pyspark import StorageLevel
from pyspark.sql import DataFrame


def persist_coalesced(frame: DataFrame, partitions: int,
                      level: StorageLevel = StorageLevel.DISK_ONLY) -> DataFrame:
    """frame in at most `partitions` (≥ 1) partitions, persisted at `level` (default: local
    disk, never the heap)."""
    return frame.coalesce(max(1, int(partitions))).persist(level)


def sized_like(frame: DataFrame) -> int:
    """Partitions for a shuffle output derived from `frame` (read from files): as many as the
    frame has (Spark sizes a file scan's partitions from the bytes, so they grow with the
    input), and at least one per core of the session, so a cluster keeps every core busy.
    Plans, runs no job."""
    return max(frame.rdd.getNumPartitions(), frame.sparkSession.sparkContext.defaultParallelism)


# Rows per task when a CPU-heavy step (TF-IDF transform, token ids) runs over rows read from a
# few large files: ≈14 s per task at the 140 µs per row the 9M encode measured for 4k TF-IDF.
ROWS_PER_TASK = 100_000


def spread(frame: DataFrame, rows: int, rows_per_task: int = ROWS_PER_TASK) -> DataFrame:
    """frame repartitioned round-robin into ⌈rows / rows_per_task⌉ partitions (at least one per
    core). For rows whose files Spark cannot split finely: a Parquet file is split by row group
    (128 MB), so prepare's validation and test rows, written as three files at 9M, were read by
    three tasks and encode's TF-IDF over them ran 15–130 s per task beside empty ones (a
    5,760× skew in the scale bench). The shuffle moves the narrow text rows once."""
    cores = frame.sparkSession.sparkContext.defaultParallelism
    return frame.repartition(max(cores, math.ceil(max(int(rows), 0) / rows_per_task)))
