"""Exact per-class ranks over hash buckets (starscale.rank) against the class-wide window that
computed them before (a sort of each whole class: the independent reference here), on data with
hash ties, tiny and empty classes, for several partitionings and seeds."""
from __future__ import annotations

import random

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from starscale import rank, resample
from starscale.split import add_class_rank, compute_ladder_buckets, seeded_hash

# class 4 has one row, class 2 two; class 3 none
COUNTS = {1: 150, 2: 2, 4: 1, 5: 400}


def frame(spark, partitions: int):
    rows = [(f"R{star}-{i:04d}", star) for star, n in COUNTS.items() for i in range(n)]
    random.Random(3).shuffle(rows)
    return spark.createDataFrame(rows, "review_id string, star int").repartition(partitions)


def tied_key(seed: int):
    """A key with many ties: 9 values shifted into the top bits, so every row of a bucket ties
    with the others and only review_id orders them."""
    return F.shiftleft(F.pmod(F.xxhash64(F.lit(seed), F.col("review_id")), F.lit(9)) - 4, 60)


def window_rank(rows, key):
    """The reference: row_number over each whole class by (key, review_id)."""
    order = Window.partitionBy("star").orderBy(key, F.col("review_id"))
    return rows.withColumn("ref", F.row_number().over(order) - 1)


@pytest.mark.parametrize("partitions", [1, 4, 9])
@pytest.mark.parametrize("keyname", ["hash", "ties"])
def test_with_rank_equals_the_class_window(spark, partitions, keyname):
    rows = frame(spark, partitions)
    key = seeded_hash(7) if keyname == "hash" else tied_key(7)
    counts = rank.compute_bucket_counts(rows, "star", key)
    assert rank.class_totals(counts) == COUNTS
    got = rank.with_rank(rows, "star", key, "review_id", counts, "r")
    expected = {r["review_id"]: r["ref"] for r in window_rank(rows, key).collect()}
    assert {r["review_id"]: r["r"] for r in got.collect()} == expected


@pytest.mark.parametrize("partitions", [1, 5])
@pytest.mark.parametrize("keyname", ["hash", "ties"])
def test_lowest_flag_equals_rank_below_target(spark, partitions, keyname):
    rows = frame(spark, partitions)
    key = seeded_hash(11) if keyname == "hash" else tied_key(11)
    counts = rank.compute_bucket_counts(rows, "star", key)
    reference = {r["review_id"]: (r["star"], r["ref"]) for r in window_rank(rows, key).collect()}
    # every target from none to all for the tiny classes, and edge values for the large ones
    for targets in ({1: 0, 2: 0, 4: 0, 5: 0}, {1: 150, 2: 2, 4: 1, 5: 400},
                    {1: 1, 2: 1, 4: 1, 5: 399}, {1: 77, 2: 2, 4: 0, 5: 1}, {5: 200}):
        bounds = rank.boundaries(counts, targets)
        got = rank.with_lowest_flag(rows, "star", key, "review_id", bounds, "low").collect()
        assert len(got) == sum(COUNTS.values())
        flagged = {r["review_id"] for r in got if r["low"]}
        expected = {rid for rid, (star, ref) in reference.items() if ref < targets.get(star, 0)}
        assert flagged == expected, targets


def test_boundaries_hand_case():
    # class 1: buckets -3 (2 rows), 0 (5), 4 (1); class 2: bucket 1 (3 rows)
    counts = {(1, -3): 2, (1, 0): 5, (1, 4): 1, (2, 1): 3}
    assert rank.offsets(counts) == {(1, -3): 0, (1, 0): 2, (1, 4): 7, (2, 1): 0}
    bounds = rank.boundaries(counts, {1: 4, 2: 3})
    assert bounds[1] == (0, 2)                       # 2 rows below bucket 0, 2 more from it
    assert bounds[2][1] == 0 and bounds[2][0] > 1     # all of class 2: above every bucket
    assert rank.boundaries(counts, {1: 2})[1] == (-3, 2)
    with pytest.raises(ValueError, match="outside"):
        rank.boundaries(counts, {1: 9})


def test_resample_keeps_the_rows_the_class_window_kept(spark):
    """random_under / random_over select exactly the rows the old per-class window selected:
    rank by (xxhash64(seed as int, review_id), review_id) below the target."""
    rows = frame(spark, 3).withColumn("text", F.col("review_id"))
    seed = 44
    old_key = F.xxhash64(F.lit(seed), F.col("review_id"))
    ref = {r["review_id"]: (r["star"], r["ref"]) for r in window_rank(rows, old_key).collect()}
    buckets = resample.compute_rank_buckets(rows, seed)
    counts = rank.class_totals(buckets)
    under = resample.target_counts(counts, "random_under", "auto")
    kept = {r["review_id"] for r in
            resample.resample(rows, "random_under", counts, under, seed, buckets).collect()}
    assert kept == {rid for rid, (star, r) in ref.items() if r < under[star]}
    over = resample.target_counts(counts, "random_over", "auto")
    copies: dict[str, int] = {}
    for r in resample.resample(rows, "random_over", counts, over, seed, buckets).collect():
        copies[r["review_id"]] = copies.get(r["review_id"], 0) + 1
    for rid, (star, r) in ref.items():
        extra, n = over[star] - counts[star], counts[star]
        assert copies[rid] == 1 + extra // n + (1 if r < extra % n else 0), rid


def test_ladder_class_rank_equals_the_class_window(spark):
    rows = (frame(spark, 6)
            .withColumn("split", F.when(F.col("review_id").endswith("7"), "test")
                        .otherwise("train")))
    ranked = add_class_rank(rows, 43, compute_ladder_buckets(rows, 43)).collect()
    train = rows.where(F.col("split") == "train")
    ref = {r["review_id"]: r["ref"] for r in window_rank(train, seeded_hash(43)).collect()}
    assert {r["review_id"]: r["class_rank"] for r in ranked} == \
        {r["review_id"]: ref.get(r["review_id"]) for r in rows.collect()}
