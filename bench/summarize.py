"""Print the latest numbers of docs/bench/*.json as Markdown tables (for docs/benchmarks.md).

    python bench/summarize.py [docs/bench]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = {
    "ingest_clean_split": ["input", "rows", "spark_seconds", "pandas_seconds", "spark_rows_per_s",
                           "pandas_rows_per_s", "spark_over_pandas_speed", "spark_peak_total_mib",
                           "spark_peak_jvm_mib", "spark_peak_workers_mib", "pandas_peak_mib"],
    "resample": ["rows", "impl", "method", "seconds", "rows_per_s", "rows_out", "peak_total_mib",
                 "peak_driver_python_mib", "peak_jvm_mib", "peak_workers_mib"],
    "input_pipeline": ["side", "samples_per_s", "runs"],
    "lstm_throughput": ["side", "workers", "steps_per_rank", "batch_size", "samples_per_s",
                        "train_seconds", "peak_mib"],
    "trainer_memory": ["rows", "workers", "steps_per_rank", "rank_peak_mib", "study_peak_mib",
                       "study_load_seconds"],
    "lr": ["rows", "engine", "fit_seconds", "seconds", "iterations", "score", "peak_mib"],
    "demo_stages": ["stage", "seconds", "manifest_seconds", "runs", "rc"],
    "scale": ["size", "stage", "cell", "rc", "wall_s", "seconds", "rows_in", "rows_out",
              "rows_per_s", "peak_jvm_mib", "jvm_heap_peak_mib", "shuffle_read_mib",
              "shuffle_write_mib", "spill_disk_mib", "tasks", "time_skew", "rows_skew",
              "longest_task_s"],
    "gpu": ["case", "device", "lstm_runtime", "rows", "samples_per_s", "samples_per_s_steady",
            "epoch_hours_projected"],
    "gpu_check": ["part", "case", "device", "cudnn_in_use", "samples_per_s", "epoch_9m_minutes",
                  "allreduce", "driver_gpu_mib", "ok"],
}


def fmt(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1000:
        v = int(v)
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def main(folder: str = "docs/bench") -> None:
    for path in sorted(Path(folder).glob("*.json")):
        report = json.loads(path.read_text())
        if not report["results"]:          # e.g. gpu_check on a machine without a GPU
            print(f"\n### {path.name}\n\n`{report['command']}`: no result rows")
            continue
        cols = COLUMNS.get(report["benchmark"], sorted(report["results"][0]))
        cols = [c for c in cols if any(c in row for row in report["results"])]   # mode-specific
        m0, m1 = report["machine_start"], report["machine_end"]
        print(f"\n### {path.name}\n\n`{report['command']}` — {report['repeats']} run(s) per side, "
              f"{m0['utc']} → {m1['utc']}, load average {m0['loadavg'][0]} → {m1['loadavg'][0]} "
              f"on {m0['cores']} cores\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for row in report["results"]:
            print("| " + " | ".join(fmt(row.get(c, "")) for c in cols) + " |")
        for key in ("scaling", "overheads", "ratios", "input_over_consumption", "total_seconds"):
            if report.get(key):
                print(f"\n{key}: `{json.dumps(report[key])}`")


if __name__ == "__main__":
    main(*sys.argv[1:])
