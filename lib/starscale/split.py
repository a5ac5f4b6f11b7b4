"""Dedupe cleaned texts, split train/validation/test by a seeded hash, rank train for the ladder.

Everything keyed on review_id hashes (``xxhash64(seed as long, review_id)``), so a row's split
and ladder rank do not depend on partitioning, row order or the run.

* Split: u = the hash's top 53 bits / 2^53 (uniform on [0, 1)); train if u < train, validation
  if u < train + validation, else test. Each row is assigned independently, so the per-star
  shares match the proportions within binomial tolerance (no exact per-star stratification:
  that would need a per-star sort and would move rows between splits whenever data is added).
* Dedupe (before splitting, so no text is in two splits): among rows with the same cleaned
  text, the one with the smallest review_id is kept (whatever its star); the others are
  duplicates whose detail is the kept review_id.
* Ladder: class_rank = 0-based rank of a train row within its star ordered by
  (xxhash64(ladder seed, review_id), review_id), computed by starscale.rank over hash buckets
  (no task sorts a whole star). Quotas per size come from ``apportion``:
  merge the per-star quantile positions (r + 0.5) / N_k (ties: lower star first) and take the
  first n — Webster/Sainte-Laguë apportionment, which is house-monotone, so q_k(n) never
  decreases in n and every smaller subset lies inside every larger one.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from starscale import rank

SPLITS = ("train", "validation", "test")
FULL = "full"


def seeded_hash(seed: int, column: str = "review_id") -> Column:
    """xxhash64 of (seed as long, column): the one hash every seeded choice here uses."""
    return F.xxhash64(F.lit(int(seed)).cast("long"), F.col(column))


def unit_interval(hash_col: Column) -> Column:
    """A 64-bit hash → double uniform on [0, 1): its top 53 bits / 2^53 (exact in a double)."""
    return F.shiftrightunsigned(hash_col, 11).cast("double") / float(2 ** 53)


def assign_split(reviews: DataFrame, train: float, validation: float, seed: int) -> DataFrame:
    """reviews + `split` ('train'|'validation'|'test') by the seeded hash of review_id.

    test gets the rest, 1 - train - validation.
    """
    u = unit_interval(seeded_hash(seed))
    split = (F.when(u < F.lit(train), F.lit("train"))
             .when(u < F.lit(train + validation), F.lit("validation"))
             .otherwise(F.lit("test")))
    return reviews.withColumn("split", split)


def mark_duplicate_texts(reviews: DataFrame, text_col: str = "text") -> DataFrame:
    """reviews + `kept_review_id`: the smallest review_id among the rows sharing its text.

    A row is a duplicate when kept_review_id != review_id. Ties on review_id (ingest makes
    them unique) fall back to (source_file, line_no) when those columns exist.
    """
    order = [F.col("review_id")] + [F.col(c) for c in ("source_file", "line_no")
                                    if c in reviews.columns]
    by_text = Window.partitionBy(F.col(text_col)).orderBy(*order)
    return (reviews
            .withColumn("_dup_rank", F.row_number().over(by_text))
            # the default frame runs from the partition's first row: first() is the kept id
            .withColumn("kept_review_id", F.first(F.col("review_id")).over(by_text))
            .withColumn("_is_duplicate", F.col("_dup_rank") > 1)
            .drop("_dup_rank"))


def compute_ladder_buckets(reviews: DataFrame, seed: int) -> dict[tuple[int, int], int]:
    """{(star, hash bucket): train rows} of reviews with `split` (a Spark action, tiny result):
    what add_class_rank needs; rank.class_totals of it are the train rows per star."""
    return rank.compute_bucket_counts(reviews.where(F.col("split") == "train"), "star",
                                      seeded_hash(seed))


def add_class_rank(reviews: DataFrame, seed: int,
                   buckets: Mapping[tuple[int, int], int]) -> DataFrame:
    """reviews (with `split`) + `class_rank` long: 0-based rank of a train row within its star
    by (xxhash64(seed, review_id), review_id); null outside train. buckets:
    compute_ladder_buckets(reviews, seed). No task sorts a whole star (starscale.rank);
    validation and test rows are not shuffled."""
    train = rank.with_rank(reviews.where(F.col("split") == "train"), "star", seeded_hash(seed),
                           "review_id", buckets, "class_rank")
    others = (reviews.where(F.col("split") != "train")
              .withColumn("class_rank", F.lit(None).cast("long")))
    return train.unionByName(others)


# --------------------------------------------------------------------------- ladder quotas
def apportion(class_counts: Mapping[int, int], n: int) -> dict[int, int]:
    """Per-class quotas summing to n: the first n of the merged positions (r + 0.5) / N_k.

    Exact integer arithmetic. Start from every position <= n / N (a prefix of the merged
    order: round-half-up of each class's share), then add the next or drop the last positions
    (ties broken by class) until the total is n; O(classes), not O(n).
    """
    counts = {int(k): int(v) for k, v in class_counts.items()}
    total = sum(counts.values())
    if not 0 <= n <= total:
        raise ValueError(f"apportion: size {n} is outside 0..{total} (the rows available)")
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"apportion: negative class count in {counts}")
    if n == total:
        return dict(counts)
    # (r + 0.5) / N_k <= n / N  ⇔  r < n N_k / N + 1/2  ⇔  count = floor((2 n N_k + N) / 2N)
    quota = {k: min(v, (2 * n * v + total) // (2 * total)) for k, v in counts.items()}
    while sum(quota.values()) < n:      # add the smallest next position
        k = min((Fraction(2 * q + 1, 2 * counts[k]), k) for k, q in quota.items()
                if q < counts[k])[1]
        quota[k] += 1
    while sum(quota.values()) > n:      # drop the largest included position
        k = max((Fraction(2 * q - 1, 2 * counts[k]), k) for k, q in quota.items() if q > 0)[1]
        quota[k] -= 1
    return quota


def ladder_quotas(class_counts: Mapping[int, int],
                  sizes: list[int | str]) -> tuple[dict[str, dict[str, int]], list[int]]:
    """({"<size>": {"<star>": quota}} for every size plus 'full', sizes clipped to full).

    A size larger than the train split is clipped to the whole train split (its quotas equal
    'full' and it is listed in the second value), so a small corpus still runs the default
    ladder; the manifest records which sizes were clipped.
    """
    counts = {int(k): int(v) for k, v in class_counts.items()}
    total = sum(counts.values())
    out: dict[str, dict[str, int]] = {}
    clipped: list[int] = []
    for size in sizes:
        if size == FULL:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ladder.sizes: {size!r} is not a positive integer or 'full'")
        if size > total:
            clipped.append(size)
        quota = apportion(counts, min(size, total))
        out[str(size)] = {str(k): quota[k] for k in sorted(quota)}
    out[FULL] = {str(k): counts[k] for k in sorted(counts)}
    return out, clipped


def ladder_subset(reviews: DataFrame, quotas_for_size: Mapping | None) -> DataFrame:
    """The ladder subset of prepare/reviews: split='train' AND class_rank < quota[star].

    quotas_for_size: {star: quota} with int or str keys (as in the manifest); a star missing
    from it contributes no rows. None: every train row (size 'full').
    """
    if quotas_for_size is None:
        return reviews.where(F.col("split") == "train")
    pairs = sorted((int(k), int(v)) for k, v in quotas_for_size.items())
    if not pairs:
        return reviews.where(F.lit(False))
    limits = F.create_map(*[F.lit(x) for pair in pairs for x in pair])
    return reviews.where((F.col("split") == "train")
                         & (F.col("class_rank") < F.coalesce(limits[F.col("star")], F.lit(0))))
