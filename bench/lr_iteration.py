"""MLlib LR: the cost of one L-BFGS iteration, and what Spark's settings change (issue 14 pt 3).

Reads the train split of an encode output (encode/<tag>/features: 4,000 top-count or 2^20
hashed TF-IDF), weights it as train-lr does and fits the multinomial model twice with the
tolerance off, for K1 and K2 iterations: the marginal seconds per iteration is
(t(K2) − t(K1)) / (K2 − K1), so the one-off passes (feature summary, first gradient, caching)
drop out. Variants, each one fit pair:

- partitions: the table as read (one task per file split) or coalesced to the cores
  (`spark.default.parallelism`): every partition sends a dense 5 × features gradient
  (42 MB at 2^20) through treeAggregate on every iteration;
- aggregationDepth 2 (MLlib's default) or 3;
- maxBlockSizeInMB 0 (auto) or 8: rows stacked into blocks for level-3 BLAS;
- the table cached in memory (train-lr's way) or read from Parquet on every pass.

    python bench/lr_iteration.py --encode-dir out/.../encode/full_random_under_hash1048576
"""
from __future__ import annotations

import time

import common

NAME = "lr_iteration"
VARIANTS = {   # name: (coalesce to cores, aggregationDepth, maxBlockSizeInMB, cache)
    "as-read": (False, 2, 0.0, True),
    "coalesced": (True, 2, 0.0, True),
    "coalesced-depth3": (True, 3, 0.0, True),
    "coalesced-blocks8mb": (True, 2, 8.0, True),
    "coalesced-uncached": (True, 2, 0.0, False),
}


def fit_seconds(train, iterations: int, depth: int, block_mb: float) -> tuple[float, int]:
    from pyspark.ml.classification import LogisticRegression
    from pyspark.sql import functions as F
    from starscale import lr
    estimator = LogisticRegression(featuresCol="features", labelCol="label",
                                   weightCol=lr.FIT_WEIGHT, family="multinomial", regParam=1e-6,
                                   maxIter=iterations, tol=0.0, standardization=False,
                                   aggregationDepth=depth, maxBlockSizeInMB=block_mb)
    started = time.perf_counter()
    model = estimator.fit(train.withColumn("label", F.col("label").cast("double")))
    return time.perf_counter() - started, int(model.summary.totalIterations)


def measure(spark, encode_dir: str, variant: tuple, k1: int, k2: int) -> dict:
    from pyspark.sql import functions as F
    from starscale import lr, resample
    from starscale.tables import FEATURES_SCHEMA
    coalesce, depth, block_mb, cache = variant
    train = (spark.read.schema(FEATURES_SCHEMA).parquet(encode_dir + "/features")
             .where(F.col("split") == "train").select("label", "weight", "features"))
    weights = resample.balanced_class_weights(resample.compute_class_counts(train, "label"))
    weighted = lr.with_fit_weight(train, weights)
    partitions_read = weighted.rdd.getNumPartitions()
    if coalesce:
        weighted = weighted.coalesce(spark.sparkContext.defaultParallelism)
    if cache:
        weighted = weighted.persist()
        weighted.count()
    t1, n1 = fit_seconds(weighted, k1, depth, block_mb)
    t2, n2 = fit_seconds(weighted, k2, depth, block_mb)
    if cache:
        weighted.unpersist()
    return {"partitions_read": partitions_read,
            "partitions_fit": weighted.rdd.getNumPartitions(),
            "rows": train.count(), "iterations": [n1, n2], "fit_seconds": [t1, t2],
            "s_per_iteration": (t2 - t1) / max(1, n2 - n1)}


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--encode-dir", action="append", required=True,
                      help="an encode/<tag> folder (repeat for several feature settings)")
    args.add_argument("--iterations", default="2,6", help="K1,K2 (default 2,6)")
    args.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    args = common.finish_args(args.parse_args(argv), NAME)
    k1, k2 = (int(k) for k in args.iterations.split(","))
    started_machine = common.machine()
    spark = common.spark_session()
    results = []
    for encode_dir in args.encode_dir:
        for name in args.variants.split(","):
            row = {"encode_dir": encode_dir, "variant": name,
                   **measure(spark, encode_dir, VARIANTS[name], k1, k2)}
            results.append(row)
            common.print_table([row], ["variant", "rows", "partitions_read", "partitions_fit",
                                       "s_per_iteration"])
    spark.stop()
    common.print_table(results, ["encode_dir", "variant", "rows", "partitions_read",
                                 "partitions_fit", "s_per_iteration"], "MLlib LR seconds per iteration")
    return common.write_report(args, NAME, results, started_machine=started_machine)


if __name__ == "__main__":
    main()
