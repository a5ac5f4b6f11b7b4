"""Benchmark 2: exact random under/over-sampling, starscale.resample (Spark) vs imbalanced-learn.

Input: a synthetic Parquet table `review_id, star, text` (stars drawn with the Wireless star mix,
texts ≈ 60 characters), generated once per size under out/bench/data. Measured, each `--repeats`
times in this invocation:
- scan: a plain Spark scan of the table (`write.format("noop")`), the floor for any Spark pass;
- starscale under / over: per-(star, hash bucket) count + `resample.resample(...)` with imblearn's 'auto'
  targets, written to the noop sink (every row materialized, nothing stored);
- imblearn labels: RandomUnderSampler / RandomOverSampler on the labels alone already in
  memory (X = row index), the cheapest possible single-machine form;
- imblearn table: the same samplers on the whole table loaded into pandas (review_id, text as X),
  which is what the study did; the load time is included.
Peak memory: Spark = driver Python + JVM (executors run inside it in local mode) + Python
workers; imblearn = this Python process.

    python bench/resample.py                  # 1M rows (add --sizes 1000000,5000000 for 5M)
    python bench/resample.py --quick          # 5k rows
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "resample"
STAR_MIX = (0.140, 0.067, 0.090, 0.167, 0.536)


def label_table(spark, rows: int) -> str:
    """out/bench/data/labels_<rows> (Parquet review_id, star, text), made once."""
    from pyspark.sql import functions as F
    path = common.WORK / "data" / f"labels_{rows}"
    if (path / "_SUCCESS").exists():
        return str(path)
    u = (F.abs(F.xxhash64(F.lit(11), F.col("id"))) % 1_000_000) / 1_000_000.0
    bounds, acc = [], 0.0
    for p in STAR_MIX[:-1]:
        acc += p
        bounds.append(acc)
    star = F.lit(5)
    for k in range(len(bounds), 0, -1):
        star = F.when(u < bounds[k - 1], F.lit(k)).otherwise(star)
    words = F.array(*[F.lit(w) for w in ("great", "bad", "works", "battery", "phone", "case",
                                         "not", "love", "broke", "cheap", "fast", "ok")])
    text = F.concat_ws(" ", F.transform(F.sequence(F.lit(0), F.lit(9)),
                                        lambda i: F.element_at(words, (F.abs(F.xxhash64(F.col("id"), i)) % 12 + 1).cast("int"))))
    (spark.range(rows, numPartitions=8)
     .select(F.format_string("R%013X", F.col("id")).alias("review_id"),
             star.cast("int").alias("star"), text.alias("text"))
     .write.mode("overwrite").parquet(str(path)))
    return str(path)


def spark_scan(spark, path: str) -> int:
    spark.read.parquet(path).write.format("noop").mode("overwrite").save()
    return 0


def spark_resample(spark, path: str, method: str) -> int:
    from starscale import rank, resample
    reviews = spark.read.parquet(path)
    buckets = resample.compute_rank_buckets(reviews, seed=44)   # as the sample stage does
    counts = rank.class_totals(buckets)
    targets = resample.target_counts(counts, method, "auto")
    out = resample.resample(reviews, method, counts, targets, seed=44, buckets=buckets)
    out.write.format("noop").mode("overwrite").save()
    return sum(targets.values())


def imblearn_labels(path: str, method: str) -> int:
    import numpy as np
    import pyarrow.parquet as pq
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler
    y = pq.read_table(path, columns=["star"]).column("star").to_numpy()
    X = np.arange(len(y)).reshape(-1, 1)
    sampler = (RandomUnderSampler if method == "random_under" else RandomOverSampler)(random_state=44)
    _, y_res = sampler.fit_resample(X, y)
    return len(y_res)


def imblearn_table(path: str, method: str) -> int:
    import pandas as pd
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler
    table = pd.read_parquet(path)
    sampler = (RandomUnderSampler if method == "random_under" else RandomOverSampler)(random_state=44)
    X_res, _ = sampler.fit_resample(table[["review_id", "text"]], table["star"])
    return len(X_res)


def bench_size(spark, rows: int, repeats: int) -> list[dict]:
    path = label_table(spark, rows)
    cases = [("spark", "scan", None, lambda: spark_scan(spark, path))]
    for method in ("random_under", "random_over"):
        cases += [("spark", "starscale", method, lambda m=method: spark_resample(spark, path, m)),
                  ("python", "imblearn_labels", method, lambda m=method: imblearn_labels(path, m)),
                  ("python", "imblearn_table", method, lambda m=method: imblearn_table(path, m))]
    runs: dict[tuple, list] = {}
    for i in range(repeats):
        for engine, impl, method, fn in cases:
            kwargs = {} if engine == "spark" else {"descendants": False}
            rows_out, secs, mem = common.measure(fn, **kwargs)
            runs.setdefault((impl, method), []).append(
                {"seconds": secs, "rows_out": rows_out, "peak_mib": mem})
            print(f"  {rows} run {i + 1} {impl} {method or ''}: {secs:.1f} s "
                  f"peak {mem['total']:.0f} MiB", flush=True)
    results = []
    for (impl, method), rs in runs.items():
        s = common.summarize_runs(rs)
        results.append({"rows": rows, "impl": impl, "method": method or "-",
                        "seconds": s["seconds"], "rows_per_s": round(rows / s["seconds"], 1),
                        "rows_out": s["rows_out"],
                        "peak_total_mib": s["peak_mib"]["total"],
                        "peak_driver_python_mib": s["peak_mib"]["python"],
                        "peak_jvm_mib": s["peak_mib"]["jvm"],
                        "peak_workers_mib": s["peak_mib"]["workers"], "runs": s})
    return results


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--sizes", default=None, help="comma-separated row counts (default 1000000)")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (
        [5000] if args.quick else [1_000_000])
    # Imported before any timing, so the first imblearn run does not pay for the imports.
    import imblearn.over_sampling  # noqa: F401
    import imblearn.under_sampling  # noqa: F401
    import pandas  # noqa: F401
    spark = common.spark_session()
    results = []
    for rows in sizes:
        results += bench_size(spark, rows, args.repeats)
    common.print_table(results, ["rows", "impl", "method", "seconds", "rows_per_s", "rows_out",
                                 "peak_total_mib", "peak_driver_python_mib", "peak_jvm_mib",
                                 "peak_workers_mib"], f"resampling, median of {args.repeats}")
    spark.stop()
    return common.write_report(args, NAME, results, started_machine=started)


if __name__ == "__main__":
    main(sys.argv[1:])
