"""Resampling of the train split with imbalanced-learn's exact per-class target counts.

The per-class targets come from a tiny per-class count on the driver (`target_counts`, a pure
function that follows imblearn's ``check_sampling_strategy``); the rows never leave the
executors. Which rows are kept or replicated depends only on ``xxhash64(seed, review_id)``,
so a result is the same for any partitioning of the input.

- random_under: keep the rows whose rank inside their star, ordered by the hash, is below the
  target. Same counts as RandomUnderSampler. The rank is never computed for a whole class:
  starscale.rank finds the hash bucket where each target falls from tiny per-bucket counts and
  ranks only that bucket's rows (no task sorts a class; the other rows are not shuffled).
- random_over: all originals, plus ``target - n`` replicas per class made by *stratified
  replication*: every row gets ``(target - n) // n`` replicas and the rows ranked below
  ``(target - n) % n`` one more. RandomOverSampler draws the extra rows i.i.d. with
  replacement; the per-class counts are identical, the spread of copies per row is smaller
  (each row is replicated floor or ceil of the mean, never 0 or many times).
- class_weight: rows unchanged, ``weight`` = sklearn's balanced weight of the row's class.
- adasyn: synthesizes feature vectors, so it runs on features, not texts: `adasyn_resample`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from starscale import rank

METHODS = ("none", "random_under", "random_over", "class_weight", "adasyn")
NAMED_STRATEGIES = ("auto", "majority", "not minority", "not majority", "all", "minority")
OUTPUT_COLUMNS = ("review_id", "star", "text", "weight", "copy")

_LOWEST = "_lowest_by_seed"


# --------------------------------------------------------------------------- targets (driver)
def target_counts(class_counts: Mapping[int, int], method: str,
                  strategy: str | Mapping[int, int]) -> dict[int, int]:
    """Per-class row counts after resampling, as imbalanced-learn would produce them.

    class_counts: {class: rows} of the input (classes with 0 rows are ignored, like imblearn,
    which only sees the labels present). method: one of METHODS; none and class_weight keep
    the counts; random_under follows RandomUnderSampler; random_over and adasyn follow the
    over-sampling semantics (RandomOverSampler; ADASYN aims at these counts approximately).
    strategy: a named strategy or {class: count}. For under-sampling a dict gives the counts
    of the listed classes (at most the available rows); for over-sampling it gives target
    counts (at least the available rows). Unlisted classes keep their rows. Ties for the
    majority/minority go to the lowest class label, as in imblearn (np.unique order).
    Returns {class: count} for every input class, sorted by class.
    """
    if method not in METHODS:
        raise ValueError(f"sample.method: {method!r} is not one of {METHODS}")
    counts = {int(k): int(v) for k, v in sorted(class_counts.items()) if int(v) > 0}
    if method in ("none", "class_weight"):
        return counts
    if len(counts) < 2:
        raise ValueError(f"sample.method={method}: resampling needs at least 2 classes in the "
                         f"train subset, got class counts {counts}")
    if isinstance(strategy, Mapping):
        wanted = _dict_strategy(counts, method, strategy)
    elif isinstance(strategy, str) and strategy in NAMED_STRATEGIES:
        wanted = _named_strategy(counts, method, strategy)
    else:
        raise ValueError(f"sample.strategy: {strategy!r} is not one of {NAMED_STRATEGIES} "
                         f"or a {{star: count}} mapping")
    return {k: wanted.get(k, n) for k, n in counts.items()}


def _named_strategy(counts: dict[int, int], method: str, strategy: str) -> dict[int, int]:
    stars = sorted(counts)
    majority = max(stars, key=counts.__getitem__)   # first of equal maxima: lowest label
    minority = min(stars, key=counts.__getitem__)
    n_max, n_min = counts[majority], counts[minority]
    if method == "random_under":
        chosen = {"auto": [k for k in stars if k != minority],
                  "not minority": [k for k in stars if k != minority],
                  "not majority": [k for k in stars if k != majority],
                  "majority": [majority],
                  "all": stars}.get(strategy)
        if chosen is None:
            raise ValueError(f"sample.strategy: {strategy!r} cannot be used with "
                             f"sample.method={method} (it names classes to over-sample)")
        return {k: n_min for k in chosen}
    chosen = {"auto": [k for k in stars if k != majority],
              "not majority": [k for k in stars if k != majority],
              "not minority": [k for k in stars if k != minority],
              "minority": [minority],
              "all": stars}.get(strategy)
    if chosen is None:
        raise ValueError(f"sample.strategy: {strategy!r} cannot be used with "
                         f"sample.method={method} (an over-sampler cannot shrink the majority)")
    return {k: n_max for k in chosen}


def _dict_strategy(counts: dict[int, int], method: str,
                   strategy: Mapping[Any, Any]) -> dict[int, int]:
    wanted: dict[int, int] = {}
    for key, value in strategy.items():
        try:
            star, n = int(key), int(value)
        except (TypeError, ValueError):
            raise ValueError(f"sample.strategy.{key}: need an integer class and count, "
                             f"got {key!r}: {value!r}") from None
        if star not in counts:
            raise ValueError(f"sample.strategy.{key}: class {star} is not present in the train "
                             f"subset (class counts {counts})")
        if n < 0:
            raise ValueError(f"sample.strategy.{key}: count {n} is negative")
        if method == "random_under" and n > counts[star]:
            raise ValueError(f"sample.strategy.{key}: under-sampling asks {n} rows of class "
                             f"{star} but only {counts[star]} are available")
        if method != "random_under" and n < counts[star]:
            raise ValueError(f"sample.strategy.{key}: over-sampling asks {n} rows of class "
                             f"{star}, fewer than the {counts[star]} already there")
        wanted[star] = n
    return wanted


def balanced_class_weights(class_counts: Mapping[int, int]) -> dict[int, float]:
    """sklearn's compute_class_weight('balanced'): n_samples / (n_classes * count_k)."""
    counts = {int(k): int(v) for k, v in sorted(class_counts.items()) if int(v) > 0}
    total, n_classes = sum(counts.values()), len(counts)
    # int / int is correctly rounded, as numpy's float64 division of the same exact values
    return {k: total / (n_classes * n) for k, n in counts.items()}


# --------------------------------------------------------------------------- Spark
def compute_class_counts(reviews: DataFrame, label_col: str = "star") -> dict[int, int]:
    """{class: rows} of reviews (a Spark action; the result is at most a handful of rows)."""
    rows = reviews.groupBy(F.col(label_col)).count().collect()
    if any(r[label_col] is None for r in rows):
        raise ValueError(f"{label_col}: null labels in the input; prepare must quarantine them")
    return {int(r[label_col]): int(r["count"]) for r in sorted(rows, key=lambda r: r[label_col])}


def rank_key(seed: int, id_col: str = "review_id") -> Column:
    """The order of rows inside a class: xxhash64(seed as int, id), ties broken by the id."""
    return F.xxhash64(F.lit(int(seed)), F.col(id_col))


def compute_rank_buckets(reviews: DataFrame, seed: int, label_col: str = "star",
                         id_col: str = "review_id") -> dict[tuple[int, int], int]:
    """{(class, key bucket): rows} of reviews (a Spark action with a tiny result): the class
    counts (rank.class_totals) and what undersample / oversample need to select rows."""
    return rank.compute_bucket_counts(reviews, label_col, rank_key(seed, id_col))


def _lowest(reviews: DataFrame, targets: Mapping[int, int], seed: int,
            buckets: Mapping[tuple[int, int], int]) -> DataFrame:
    """reviews + _lowest: the row ranks below targets[star] by (rank_key, review_id)."""
    bounds = rank.boundaries(buckets, targets)
    return rank.with_lowest_flag(reviews, "star", rank_key(seed), "review_id", bounds, _LOWEST)


def undersample(reviews: DataFrame, targets: Mapping[int, int], seed: int,
                buckets: Mapping[tuple[int, int], int]) -> DataFrame:
    """Keep targets[star] rows of each star: those ranked lowest by xxhash64(seed, review_id).
    buckets: compute_rank_buckets(reviews, seed)."""
    return (_lowest(reviews, targets, seed, buckets)
            .where(F.col(_LOWEST))
            .drop(_LOWEST)
            .withColumn("copy", F.lit(0)))


def oversample(reviews: DataFrame, class_counts: Mapping[int, int], targets: Mapping[int, int],
               seed: int, buckets: Mapping[tuple[int, int], int]) -> DataFrame:
    """All rows (copy 0) plus targets[k] - n_k replicas per class (copy 1, 2, ...).

    Stratified replication: with extra = target - n, every row gets extra // n replicas and
    the extra % n rows ranked lowest by xxhash64(seed, review_id) one more.
    buckets: compute_rank_buckets(reviews, seed).
    """
    full = {k: (targets[k] - n) // n for k, n in class_counts.items() if n > 0}
    remainder = {k: (targets[k] - n) % n for k, n in class_counts.items() if n > 0}
    replicas = (rank.literal_lookup(full, "star")
                + F.when(F.col(_LOWEST), 1).otherwise(0)).cast("int")
    return (_lowest(reviews, remainder, seed, buckets)
            .withColumn("copy", F.explode(F.sequence(F.lit(0), replicas)))
            .drop(_LOWEST))


def resample(train_reviews: DataFrame, method: str, class_counts: Mapping[int, int],
             targets: Mapping[int, int], seed: int,
             buckets: Mapping[tuple[int, int], int] | None = None) -> DataFrame:
    """train_reviews (review_id, star, text) → the sample/<tag>/train table (OUTPUT_COLUMNS).

    targets: target_counts(class_counts, method, strategy). adasyn passes rows through (the
    LR trainer applies `adasyn_resample` to features); class_weight sets the balanced weight.
    buckets: compute_rank_buckets(train_reviews, seed), needed by random_under / random_over.
    """
    base = train_reviews.select(F.col("review_id"), F.col("star"), F.col("text"))
    if method in ("random_under", "random_over") and buckets is None:
        raise ValueError(f"resample: sample.method={method} needs the rank buckets of its "
                         f"input (resample.compute_rank_buckets)")
    if method == "random_under":
        sampled = undersample(base, targets, seed, buckets)
    elif method == "random_over":
        sampled = oversample(base, class_counts, targets, seed, buckets)
    elif method in ("none", "class_weight", "adasyn"):
        sampled = base.withColumn("copy", F.lit(0))
    else:
        raise ValueError(f"sample.method: {method!r} is not one of {METHODS}")
    if method == "class_weight":
        weight = rank.literal_lookup(balanced_class_weights(class_counts), "star")
    else:
        weight = F.lit(1.0)
    return sampled.select(
        F.col("review_id").cast("string"),
        F.col("star").cast("int"),
        F.col("text").cast("string"),
        weight.cast("double").alias("weight"),
        F.col("copy").cast("int"),
    )


# --------------------------------------------------------------------------- ADASYN (driver)
def adasyn_resample(X, y, seed: int, strategy: str | Mapping[int, int], max_rows: int,
                    n_neighbors: int = 5):
    """imbalanced-learn ADASYN on driver-side arrays → (X_resampled, y_resampled).

    X: array or scipy sparse matrix (e.g. TF-IDF rows), y: labels. strategy as in
    `target_counts` with over-sampling semantics; a dict is keyed by the values in y (a caller
    with labels star - 1 converts the star keys). The originals come first, unchanged, then
    the synthetic rows. ADASYN's per-class counts are close to, not exactly, the targets: it
    spreads the new rows over the minority rows by their share of majority neighbours.
    Raises ValueError naming sample.adasyn_max_rows when X has more than max_rows rows.
    """
    import numpy as np
    from imblearn.over_sampling import ADASYN

    n_rows = X.shape[0]
    if n_rows > max_rows:
        raise ValueError(f"sample.adasyn_max_rows: ADASYN runs on the driver and the input has "
                         f"{n_rows} rows, more than the limit {max_rows}; raise "
                         f"sample.adasyn_max_rows, take a smaller sample.size or use "
                         f"sample.method=random_over")
    y = np.asarray(y)
    if len(y) != n_rows:
        raise ValueError(f"adasyn_resample: X has {n_rows} rows but y has {len(y)} labels")
    counts = {k.item() if hasattr(k, "item") else k: int(v) for k, v in Counter(y).items()}
    targets = target_counts(counts, "adasyn", strategy)
    to_grow = {k: n for k, n in targets.items() if n > counts[k]}
    if not to_grow:                       # imblearn refuses a no-op; we return the input
        return X, y
    sampler = ADASYN(sampling_strategy=to_grow, random_state=seed, n_neighbors=n_neighbors)
    return sampler.fit_resample(X, y)
