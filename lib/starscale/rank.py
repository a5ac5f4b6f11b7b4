"""Exact per-class ranks by a seeded hash, without sorting a whole class in one task.

A row's rank inside its class is its position when the class is ordered by (key, id), key a
64-bit seeded hash. A window partitioned by class would sort every row of a class in one task
(the 5★ rows, ≈43% of the corpus, on one core); instead:

    bucket_of(key)                          the key's top BUCKET_BITS bits: order-preserving
    bucket_counts(rows, ...)                rows per (class, bucket): ≤ classes × 2^BUCKET_BITS
    offsets(counts)                         driver: rows of the class in lower buckets
    with_rank(rows, ..., counts)            rank = offset + position inside (class, bucket):
                                            a window over many small groups
    boundaries(counts, targets)             driver: per class, the bucket where rank `target`
                                            falls and how many of its rows are below it
    with_lowest_flag(rows, ..., bounds)     rows ranked below target: every row of a lower
                                            bucket, plus a window over the one boundary bucket
                                            per class (no shuffle for the other rows)

Because buckets are ranges of the key, ordering by (bucket, key, id) is ordering by (key, id):
the ranks are those of the class-wide window for any partitioning, hash ties included (equal
keys share a bucket and are ordered by id there).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

BUCKET_BITS = 12
_BELOW_ALL = -(2 ** 62)       # boundary bucket that keeps no row (every bucket is above it)
_ABOVE_ALL = 2 ** 62          # boundary bucket that keeps every row
_BUCKET = "_rank_bucket"


def bucket_of(key: Column, bits: int = BUCKET_BITS) -> Column:
    """The top `bits` bits of a signed 64-bit key; an arithmetic shift keeps the order."""
    return F.shiftright(key, 64 - bits)


def bucket_counts(rows: DataFrame, label_col: str, key: Column) -> DataFrame:
    """label, bucket, count: a hash aggregate (partial counts before the shuffle)."""
    return rows.groupBy(F.col(label_col).alias("label"),
                        bucket_of(key).alias("bucket")).count()


def compute_bucket_counts(rows: DataFrame, label_col: str,
                          key: Column) -> dict[tuple[int, int], int]:
    """{(label, bucket): rows}: a Spark action; the result has at most classes × 2^bits rows."""
    rows_ = bucket_counts(rows, label_col, key).collect()
    if any(r["label"] is None for r in rows_):
        raise ValueError(f"{label_col}: null labels in the input; prepare must quarantine them")
    return {(int(r["label"]), int(r["bucket"])): int(r["count"]) for r in rows_}


def class_totals(counts: Mapping[tuple[int, int], int]) -> dict[int, int]:
    """{label: rows} from bucket counts, sorted by label."""
    totals: dict[int, int] = {}
    for (label, _), n in counts.items():
        totals[label] = totals.get(label, 0) + n
    return dict(sorted(totals.items()))


def offsets(counts: Mapping[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """{(label, bucket): rows of the same label in lower buckets}."""
    out, seen = {}, {}
    for label, bucket in sorted(counts):
        out[(label, bucket)] = seen.get(label, 0)
        seen[label] = seen.get(label, 0) + counts[(label, bucket)]
    return out


def boundaries(counts: Mapping[tuple[int, int], int],
               targets: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    """{label: (bucket, need)}: the rows ranked below targets[label] are every row in a lower
    bucket plus the `need` lowest of `bucket`. A label missing from targets keeps no row."""
    totals = class_totals(counts)
    out = {}
    for label, total in totals.items():
        target = int(targets.get(label, 0))
        if not 0 <= target <= total:
            raise ValueError(f"rank target {target} for class {label} is outside 0..{total}")
        if target == 0:
            out[label] = (_BELOW_ALL, 0)
            continue
        if target == total:
            out[label] = (_ABOVE_ALL, 0)
            continue
        below = 0
        for bucket in sorted(b for lab, b in counts if lab == label):
            n = counts[(label, bucket)]
            if below + n >= target:
                out[label] = (bucket, target - below)
                break
            below += n
    return out


def _pairs_frame(spark, mapping: Mapping[tuple[int, int], int], name: str) -> DataFrame:
    schema = T.StructType([T.StructField("_label", T.LongType()),
                           T.StructField(_BUCKET, T.LongType()),
                           T.StructField(name, T.LongType())])
    return spark.createDataFrame([(int(k[0]), int(k[1]), int(v)) for k, v in mapping.items()],
                                 schema)


def literal_lookup(mapping: Mapping[int, Any], key_col: str,
                   value_type: str | None = None) -> Column:
    """Column: mapping[key column] from a literal map (tiny: one entry per class; keys compared
    as longs); null for a key not in it or an empty map. value_type: cast the values (e.g.
    "long"); otherwise Spark's literal types (int, double)."""
    def value(v: Any) -> Column:
        return F.lit(v).cast(value_type) if value_type else F.lit(v)
    pairs = [col for k, v in sorted(mapping.items())
             for col in (F.lit(int(k)).cast("long"), value(v))]
    if not pairs:
        return F.lit(None).cast(value_type or "long")
    return F.create_map(*pairs)[F.col(key_col).cast("long")]


def with_rank(rows: DataFrame, label_col: str, key: Column, id_col: str,
              counts: Mapping[tuple[int, int], int], rank_col: str) -> DataFrame:
    """rows + rank_col (long, 0-based) inside the label by (key, id). counts:
    compute_bucket_counts of these very rows. The offsets travel as a small broadcast table;
    the window groups by (label, bucket), so no task sorts more than one bucket of a class."""
    spark = rows.sparkSession
    table = F.broadcast(_pairs_frame(spark, offsets(counts), "_offset"))
    in_bucket = Window.partitionBy(F.col(label_col), F.col(_BUCKET)).orderBy(key, F.col(id_col))
    keyed = (rows.withColumn(_BUCKET, bucket_of(key))
             .withColumn("_label", F.col(label_col).cast("long")))
    return (keyed.join(table, on=["_label", _BUCKET], how="inner")
            .withColumn(rank_col, (F.col("_offset") + F.row_number().over(in_bucket) - 1)
                        .cast("long"))
            .drop("_label", _BUCKET, "_offset"))


def with_lowest_flag(rows: DataFrame, label_col: str, key: Column, id_col: str,
                     bounds: Mapping[int, tuple[int, int]], flag_col: str) -> DataFrame:
    """rows + flag_col: whether the row ranks below its label's target (bounds: boundaries).

    Rows outside the boundary buckets are flagged where they are (no shuffle); the boundary
    rows (one bucket per class) are ranked by a window over just them.
    """
    limit = F.coalesce(literal_lookup({k: b for k, (b, _) in bounds.items()}, label_col, "long"),
                       F.lit(_BELOW_ALL).cast("long"))
    need = F.coalesce(literal_lookup({k: n for k, (_, n) in bounds.items()}, label_col, "long"),
                      F.lit(0).cast("long"))
    keyed = rows.withColumn(_BUCKET, bucket_of(key))
    clear = (keyed.where(F.col(_BUCKET) != limit)
             .withColumn(flag_col, F.col(_BUCKET) < limit))
    in_edge = Window.partitionBy(F.col(label_col)).orderBy(key, F.col(id_col))
    edge = (keyed.where(F.col(_BUCKET) == limit)
            .withColumn(flag_col, F.row_number().over(in_edge) <= need))
    return clear.unionByName(edge).drop(_BUCKET)
