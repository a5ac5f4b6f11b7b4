"""Persisted shuffle outputs are narrowed (starscale.partitions): AQE does not merge a
persisted frame's 200 shuffle partitions, so every job that read one ran 200 millisecond tasks
(issue 14's skew at 9M: ingest's repeated ids, prepare's flagged texts)."""
from __future__ import annotations

import itertools

from pyspark import StorageLevel
from pyspark.sql import functions as F

from starscale import partitions
from starscale.stages import ingest as ingest_stage
from starscale.stages import prepare
from tests.test_ingest import tsv_row, HEADER
from tests.test_prepare import _publish_ingest

_groups = itertools.count()


def stage_tasks(spark, action) -> list[int]:
    """Run action() in a job group of its own; the task count of every stage it ran."""
    sc = spark.sparkContext
    group = f"test-partitions-{next(_groups)}"
    sc.setJobGroup(group, group)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    return [info.numTasks for job in tracker.getJobIdsForGroup(group)
            for info in [tracker.getStageInfo(s) for s in tracker.getJobInfo(job).stageIds]
            if info is not None]


def test_a_persisted_aggregate_keeps_200_partitions_unless_coalesced(spark):
    rows = spark.range(0, 20_000).withColumn("k", F.col("id") % 5_000)
    aggregate = rows.groupBy("k").count()
    assert spark.conf.get("spark.sql.shuffle.partitions") == "200"
    plain = aggregate.persist(StorageLevel.DISK_ONLY)
    narrow = partitions.persist_coalesced(rows.groupBy("k").count(), 2)
    try:
        assert 200 in stage_tasks(spark, plain.count)    # the Spark behaviour worked around
        assert max(stage_tasks(spark, narrow.count)) <= 2
        assert narrow.count() == plain.count() == 5_000
    finally:
        plain.unpersist()
        narrow.unpersist()


def test_sized_like_follows_the_input_and_the_cores(spark, tmp_path):
    spark.range(0, 1000).repartition(7).write.parquet(str(tmp_path / "t"))
    frame = spark.read.parquet(str(tmp_path / "t"))
    cores = spark.sparkContext.defaultParallelism
    assert partitions.sized_like(frame) == max(frame.rdd.getNumPartitions(), cores)
    assert partitions.sized_like(frame.coalesce(1)) == cores


def test_ingest_reads_its_repeated_ids_in_one_task_per_core(spark, tmp_path):
    src = tmp_path / "dups.tsv"
    lines = [HEADER] + [tsv_row(f"R{i % 300}", body=f"text {i}") for i in range(900)]
    src.write_text("\n".join(lines) + "\n")
    outcomes, kept, _ = ingest_stage.build_outcomes(spark, ["file:" + str(src)], "tsv")
    try:
        repeated = kept[1]
        assert repeated.count() == 300
        assert max(stage_tasks(spark, repeated.count)) <= spark.sparkContext.defaultParallelism
    finally:
        for frame in kept:
            frame.unpersist()


def test_prepare_runs_no_200_task_stage(spark, config_factory):
    cfg = config_factory("ladder.sizes=[5, 20, full]")
    _publish_ingest(spark, cfg)
    tasks = stage_tasks(spark, lambda: prepare.run(spark, cfg, force=True))
    assert tasks and max(tasks) < 200, tasks


def test_spread_gives_even_tasks_to_rows_from_one_file(spark, tmp_path):
    spark.range(0, 1000).coalesce(1).write.parquet(str(tmp_path / "one"))
    frame = spark.read.parquet(str(tmp_path / "one"))
    assert frame.rdd.getNumPartitions() == 1
    spread = partitions.spread(frame, 1000, rows_per_task=100)
    sizes = spread.rdd.glom().map(len).collect()
    assert len(sizes) == 10 and sum(sizes) == 1000 and max(sizes) - min(sizes) <= 1
    cores = spark.sparkContext.defaultParallelism
    assert partitions.spread(frame, 10, rows_per_task=100).rdd.getNumPartitions() == cores


def test_encode_reads_the_held_out_rows_in_one_task_per_core_at_least(spark, tmp_path):
    """prepare's validation and test rows sit in a few files; encode spreads them before its
    TF-IDF and token ids (the 9M scale bench: 3 files, 3 working tasks of 15–130 s)."""
    from starscale.stages import encode as encode_stage
    rows = [(f"R{i}", 1 + i % 5, f"text {i}", ("train", "validation", "test")[i % 3], 0)
            for i in range(3000)]
    (spark.createDataFrame(rows, "review_id string, star int, text string, split string, "
                                 "class_rank long")
     .coalesce(1).write.parquet(str(tmp_path / "reviews")))
    reviews = spark.read.parquet(str(tmp_path / "reviews"))
    held_out = encode_stage.held_out_rows(reviews, 2000)
    sizes = held_out.rdd.glom().map(len).collect()
    assert len(sizes) == spark.sparkContext.defaultParallelism >= 2
    assert sum(sizes) == 2000 and max(sizes) - min(sizes) <= 1
    assert {r["split"] for r in held_out.select("split").distinct().collect()} == \
        {"validation", "test"}
