"""How many partitions a persisted shuffle output keeps.

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
