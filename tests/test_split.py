"""starscale.split: hash split, dedupe, class ranks, ladder quotas and nested subsets."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from pyspark.sql import functions as F

from starscale.split import (add_class_rank, apportion, assign_split, compute_ladder_buckets,
                             ladder_quotas, ladder_subset, mark_duplicate_texts)

PROPORTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _star(i: int) -> int:
    """An imbalanced star mix like Amazon's: 14/7/9/17/53 %."""
    r = i % 100
    return 1 if r < 14 else 2 if r < 21 else 3 if r < 30 else 4 if r < 47 else 5


@pytest.fixture(scope="module")
def reviews(spark):
    rows = [(f"R{i:06d}", _star(i), f"text {i}") for i in range(4000)]
    return spark.createDataFrame(rows, "review_id string, star int, text string")


def _assignment(frame) -> dict[str, str]:
    return {r["review_id"]: r["split"] for r in frame.select("review_id", "split").collect()}


def test_split_same_for_any_partitioning(reviews):
    two = _assignment(assign_split(reviews.repartition(2), 0.8, 0.1, seed=42))
    seven = _assignment(assign_split(reviews.repartition(7, "star"), 0.8, 0.1, seed=42))
    assert len(two) == 4000 and two == seven
    other_seed = _assignment(assign_split(reviews, 0.8, 0.1, seed=43))
    assert other_seed != two                     # the seed matters


def test_split_proportions_and_per_star_shares(reviews):
    rows = (assign_split(reviews, 0.8, 0.1, seed=42)
            .groupBy("star", "split").count().collect())
    by_star: dict[int, dict[str, int]] = {}
    for r in rows:
        by_star.setdefault(r["star"], {})[r["split"]] = r["count"]
    totals = {s: sum(c.get(s, 0) for c in by_star.values()) for s in PROPORTIONS}
    assert sum(totals.values()) == 4000
    for split, p in PROPORTIONS.items():
        # 4 binomial standard deviations: a deterministic hash, so this never flakes
        assert abs(totals[split] / 4000 - p) <= 4 * math.sqrt(p * (1 - p) / 4000), totals
        for star, counts in by_star.items():
            n = sum(counts.values())
            share = counts.get(split, 0) / n
            assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n), (star, split, counts)


def test_dedupe_keeps_smallest_review_id(spark):
    rows = [("R3", 5, "a"), ("R1", 4, "a"), ("R2", 1, "b"), ("R5", 2, "a"), ("R4", 3, "c"),
            ("R6", 3, "c")]
    frame = spark.createDataFrame(rows, "review_id string, star int, text string")
    marked = {r["review_id"]: (r["kept_review_id"], r["_is_duplicate"])
              for r in mark_duplicate_texts(frame).collect()}
    assert marked == {"R1": ("R1", False), "R3": ("R1", True), "R5": ("R1", True),
                      "R2": ("R2", False), "R4": ("R4", False), "R6": ("R4", True)}


def test_no_text_in_two_splits_after_prepare(spark, tmp_path):
    from starscale.stages.prepare import write_tables
    # 600 rows over 120 distinct bodies that differ only in case/punctuation
    rows = [(f"R{i:05d}", _star(i), f"Body number {i % 120}{'!' * (i % 3)}", "f.tsv", i + 2)
            for i in range(600)]
    frame = spark.createDataFrame(
        rows, "review_id string, star int, body string, source_file string, line_no long")
    staging = str(tmp_path / "prepare")
    write_tables(frame, staging, remove_stopwords=False, lemmatize=False, train=0.8,
                 validation=0.1, split_seed=42, ladder_seed=43)
    prepared = spark.read.parquet(staging + "/reviews")
    quarantine = spark.read.parquet(staging + "/quarantine")
    texts = prepared.groupBy("text").agg(F.countDistinct("split").alias("splits"),
                                         F.count("*").alias("rows"))
    assert texts.where((F.col("splits") > 1) | (F.col("rows") > 1)).count() == 0
    assert prepared.count() == 120
    # the kept row of body k is R{k:05d} (smallest id), named in every duplicate's detail,
    # and the quarantined raw is the row's own body
    quarantined = {r["review_id"]: (r["detail"], r["raw"]) for r in
                   quarantine.where(F.col("reason") == "duplicate_text").collect()}
    assert quarantined == {f"R{i:05d}": (f"R{i % 120:05d}",
                                         f"Body number {i % 120}{'!' * (i % 3)}")
                           for i in range(120, 600)}


# --------------------------------------------------------------------------- ladder quotas
def _merged_quotas(counts: dict[int, int], n: int) -> dict[int, int]:
    """Reference: sort every position (r + 0.5) / N_k (exact fractions, ties by class)."""
    positions = sorted((Fraction(2 * r + 1, 2 * c), k) for k, c in counts.items() for r in range(c))
    quota = {k: 0 for k in counts}
    for _, k in positions[:n]:
        quota[k] += 1
    return quota


def test_apportion_hand_case():
    # positions: class 1 (N=2): 1/4, 3/4; class 2 (N=1): 1/2; class 3 (N=5): .1 .3 .5 .7 .9
    # merged: .1(3) .25(1) .3(3) .5(2) .5(3) .7(3) .75(1) .9(3)
    expected = {0: (0, 0, 0), 1: (0, 0, 1), 2: (1, 0, 1), 3: (1, 0, 2), 4: (1, 1, 2),
                5: (1, 1, 3), 6: (1, 1, 4), 7: (2, 1, 4), 8: (2, 1, 5)}
    for n, (a, b, c) in expected.items():
        assert apportion({1: 2, 2: 1, 3: 5}, n) == {1: a, 2: b, 3: c}, n


def test_apportion_realistic_hand_case():
    # N = 1000, n = 100: rounding each share (14, 6.7, 9, 16.7, 53.6) gives 14+7+9+17+54 = 101;
    # the largest included position is star 5's 54th, 107/1072 > 33/334 > 13/134 > ...
    assert apportion({1: 140, 2: 67, 3: 90, 4: 167, 5: 536}, 100) == \
        {1: 14, 2: 7, 3: 9, 4: 17, 5: 53}


def test_apportion_matches_merged_positions_and_is_monotone():
    rng = random.Random(5)
    for _ in range(150):
        counts = {k: rng.choice([0, 1, 3, rng.randint(0, 60), rng.randint(0, 300)])
                  for k in range(1, 6)}
        total = sum(counts.values())
        previous = {k: 0 for k in counts}
        for n in range(total + 1):
            quota = apportion(counts, n)
            if n % 17 == 0 or n == total:        # the reference sort is slow: every 17th
                assert quota == _merged_quotas(counts, n), (counts, n)
            assert sum(quota.values()) == n
            assert all(previous[k] <= quota[k] <= counts[k] for k in counts)
            previous = quota


def test_apportion_refuses_sizes_outside_the_data():
    with pytest.raises(ValueError, match="outside"):
        apportion({1: 2, 2: 3}, 6)


def test_ladder_quotas_clip_and_full():
    quotas, clipped = ladder_quotas({1: 2, 2: 1, 3: 5}, [4, 100, "full"])
    assert quotas == {"4": {"1": 1, "2": 1, "3": 2}, "100": {"1": 2, "2": 1, "3": 5},
                      "full": {"1": 2, "2": 1, "3": 5}}
    assert clipped == [100]


# --------------------------------------------------------------------------- ranks, subsets
@pytest.fixture(scope="module")
def ranked(reviews):
    split = assign_split(reviews, 0.8, 0.1, seed=42).repartition(3)
    return add_class_rank(split, 43, compute_ladder_buckets(split, 43)).cache()


def test_class_rank_dense_per_star_and_null_outside_train(ranked, reviews):
    rows = ranked.select("star", "split", "class_rank").collect()
    ranks: dict[int, list[int]] = {}
    for r in rows:
        if r["split"] == "train":
            ranks.setdefault(r["star"], []).append(r["class_rank"])
        else:
            assert r["class_rank"] is None
    for star, values in ranks.items():
        assert sorted(values) == list(range(len(values))), star
    split7 = assign_split(reviews.repartition(7), 0.8, 0.1, seed=42)
    again = add_class_rank(split7, 43, compute_ladder_buckets(split7, 43))
    key = ["review_id", "split", "class_rank"]
    assert sorted(map(tuple, ranked.select(*key).collect()), key=str) == \
        sorted(map(tuple, again.select(*key).collect()), key=str)


def test_ladder_subsets_nested_exact_and_proportional(ranked):
    train_counts = {r["star"]: r["count"] for r in
                    ranked.where(F.col("split") == "train").groupBy("star").count().collect()}
    total = sum(train_counts.values())
    quotas, clipped = ladder_quotas(train_counts, [10, 57, 400, 1500, "full"])
    assert clipped == []
    previous: set[str] = set()
    for size in ["10", "57", "400", "1500", "full"]:
        subset = ladder_subset(ranked, quotas[size])
        per_star = {r["star"]: r["count"] for r in subset.groupBy("star").count().collect()}
        ids = {r["review_id"] for r in subset.select("review_id").collect()}
        n = total if size == "full" else int(size)
        assert len(ids) == n
        assert {str(k): v for k, v in per_star.items()} == \
            {k: v for k, v in quotas[size].items() if v > 0}
        for star, count in train_counts.items():
            assert abs(quotas[size][str(star)] - n * count / total) <= 1, (size, star)
        assert previous <= ids, size
        previous = ids
    assert ladder_subset(ranked, {}).count() == 0
