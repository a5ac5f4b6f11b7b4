"""Benchmark 1: ingest + clean + split, Spark local[2] (starscale) vs single-process pandas.

Both sides start from the raw TSV and end with cleaned, de-duplicated, split reviews:
- starscale: the `ingest` then `prepare` stages (run(spark, cfg, force=True)), writing Parquet.
- pandas (the study's approach): read_csv, drop bad stars and repeated review_ids, clean every
  body with starscale.clean.clean_text over a pandas Series, drop empty and repeated texts,
  scikit-learn train_test_split (stratified 80/10/10), kept in memory.
Inputs: the real Digital_Software file (102k rows; skipped when absent) and 1M / 2M synthetic
rows (make-corpus, generated once under out/bench/data; the 1M input is the first of the two
1M-row part files of the 2M corpus). Reports rows/s of both, their ratio and time(2M)/time(1M).

    python bench/ingest_clean_split.py            # full (≈25 min on a quiet 2-core machine)
    python bench/ingest_clean_split.py --only real                 # the 102k real rows only
    python bench/ingest_clean_split.py --only synthetic --sizes 100000,200000 --repeats 1
    python bench/ingest_clean_split.py --quick    # 2k / 4k synthetic rows
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "ingest_clean_split"


def pandas_ingest_clean_split(paths: list[str], seed: int = 42) -> dict:
    """The study's single-process pipeline over the same files; returns its counts."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from starscale.clean import clean_text

    frames = [pd.read_csv(p, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, on_bad_lines="skip",
                          keep_default_na=False) for p in paths]
    reviews = pd.concat(frames, ignore_index=True)
    rows_in = len(reviews)
    star = pd.to_numeric(reviews["star_rating"], errors="coerce")
    reviews = reviews[star.between(1, 5) & (reviews["review_body"] != "")]
    reviews = reviews.drop_duplicates("review_id")
    reviews = pd.DataFrame({"review_id": reviews["review_id"],
                            "star": pd.to_numeric(reviews["star_rating"]).astype(np.int64),
                            "text": reviews["review_body"].map(clean_text)})
    reviews = reviews[reviews["text"] != ""].drop_duplicates("text")
    train, rest = train_test_split(reviews, train_size=0.8, stratify=reviews["star"],
                                   random_state=seed)
    validation, test = train_test_split(rest, train_size=0.5, stratify=rest["star"],
                                        random_state=seed)
    return {"rows_in": rows_in, "rows_out": len(reviews), "train": len(train),
            "validation": len(validation), "test": len(test)}


def spark_ingest_clean_split(spark, paths: list[str], label: str, seed: int = 42) -> dict:
    """The ingest and prepare stages over the files; returns counts and per-stage seconds."""
    import time
    from starscale.stages import ingest, prepare
    inputs = "[" + ",".join(paths) + "]"
    cfg = common.local_config(common.WORK / "work" / f"ics_{label}", f"ingest.inputs={inputs}",
                              f"split.seed={seed}", "ingest.max_rejected_share=0.5")
    started = time.perf_counter()
    ingested = ingest.run(spark, cfg, force=True)
    mid = time.perf_counter()
    prepared = prepare.run(spark, cfg, force=True)
    done = time.perf_counter()
    totals = ingested["totals"]
    return {"rows_in": int(totals["lines"]) - int(totals["header_lines"]),
            "rows_out": int(prepared["rows_out"]),
            "ingest_s": mid - started, "prepare_s": done - mid}


def bench_input(spark, label: str, paths: list[str], repeats: int) -> dict:
    spark_runs, pandas_runs = [], []
    for i in range(repeats):
        # Alternate which side goes first, so neither always meets a warmer page cache.
        order = ("spark", "pandas") if i % 2 == 0 else ("pandas", "spark")
        for side in order:
            if side == "spark":
                res, secs, mem = common.measure(lambda: spark_ingest_clean_split(spark, paths, label))
                spark_runs.append({"seconds": secs, "rows_in": res["rows_in"],
                                   "rows_out": res["rows_out"], "ingest_s": res["ingest_s"],
                                   "prepare_s": res["prepare_s"], "peak_mib": mem})
            else:
                # pandas runs in this Python process: its own RSS is the pandas side's memory.
                res, secs, mem = common.measure(lambda: pandas_ingest_clean_split(paths),
                                                descendants=False)
                pandas_runs.append({"seconds": secs, "rows_in": res["rows_in"],
                                    "rows_out": res["rows_out"], "peak_mib": mem})
            print(f"  {label} run {i + 1} {side}: {secs:.1f} s", flush=True)
    s, p = common.summarize_runs(spark_runs), common.summarize_runs(pandas_runs)
    rows = int(s["rows_in"])
    return {
        "input": label, "files": paths, "rows": rows,
        "spark_seconds": s["seconds"], "pandas_seconds": p["seconds"],
        "spark_rows_per_s": round(rows / s["seconds"], 1),
        "pandas_rows_per_s": round(rows / p["seconds"], 1),
        "spark_over_pandas_speed": round(p["seconds"] / s["seconds"], 3),
        "spark_peak_total_mib": s["peak_mib"]["total"],
        "spark_peak_jvm_mib": s["peak_mib"]["jvm"],
        "spark_peak_workers_mib": s["peak_mib"]["workers"],
        "pandas_peak_mib": p["peak_mib"]["python"],
        "spark_rows_out": s["rows_out"], "pandas_rows_out": p["rows_out"],
        "spark_runs": s, "pandas_runs": p,
    }


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--only", choices=("real", "synthetic"), default=None,
                      help="run only the real file or only the synthetic sizes")
    args.add_argument("--sizes", default=None,
                      help="synthetic sizes as N1,N2 (N2 = 2·N1; default 1000000,2000000)")
    args.add_argument("--small-only", action="store_true",
                      help="of the synthetic pair, run only N1 (the first part file of the N2 corpus)")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    small, big = (2000, 4000) if args.quick else (1_000_000, 2_000_000)
    if args.sizes:
        small, big = (int(x) for x in args.sizes.split(","))
    spark = common.spark_session()
    inputs = []
    if not args.quick and args.only != "synthetic" and common.REAL_DATA.is_file():
        inputs.append(("real_102k", [str(common.REAL_DATA)]))
    if args.only != "real":
        files = common.synthetic_corpus(spark, big, part_files=2)
        if big == 2 * small:
            inputs.append((f"synthetic_{small}", files[:1]))
        if not args.small_only:
            inputs.append((f"synthetic_{big}", files))
    results = []
    for label, paths in inputs:
        print(f"{label}: {paths}", flush=True)
        results.append(bench_input(spark, label, paths, args.repeats))
    by = {r["input"]: r for r in results}
    scaling = {}
    if f"synthetic_{small}" in by and f"synthetic_{big}" in by:
        a, b = by[f"synthetic_{small}"], by[f"synthetic_{big}"]
        scaling = {"spark_time_big_over_small": round(b["spark_seconds"] / a["spark_seconds"], 3),
                   "pandas_time_big_over_small": round(b["pandas_seconds"] / a["pandas_seconds"], 3),
                   "rows_big_over_small": round(b["rows"] / a["rows"], 3)}
    common.print_table(results, ["input", "rows", "spark_seconds", "pandas_seconds",
                                 "spark_rows_per_s", "pandas_rows_per_s", "spark_over_pandas_speed",
                                 "spark_peak_total_mib", "pandas_peak_mib"],
                       f"ingest+clean+split, median of {args.repeats}")
    if scaling:
        print(f"scaling time({big})/time({small}): {scaling}")
    spark.stop()
    return common.write_report(args, NAME, results, {"scaling": scaling}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
