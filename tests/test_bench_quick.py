"""Every benchmark script runs end to end in --quick mode and writes the JSON the docs read.

Each script runs in its own process (as `make bench BENCH_ARGS=--quick` runs it) with its JSON
sent to tmp_path. The checks are on the report's shape: the expected keys, positive numbers,
and the rows/sides each benchmark promises; never on how fast anything was.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import REPO

pytestmark = pytest.mark.integration     # each runs a benchmark script as its own process

TOP_KEYS = {"benchmark", "quick", "repeats", "command", "machine_start", "machine_end", "results"}


def run_quick(name: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick",
                           "--out", str(out), *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert TOP_KEYS <= set(report), set(report)
    assert report["benchmark"] == name and report["quick"] is True
    assert report["machine_start"]["cores"] >= 1 and report["machine_start"]["memory_gib"] > 0
    assert report["results"]
    return report


def positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row.get(key))


def test_ingest_clean_split(tmp_path):
    report = run_quick("ingest_clean_split", tmp_path)
    assert [r["input"] for r in report["results"]] == ["synthetic_2000", "synthetic_4000"]
    for row in report["results"]:
        positive(row, "rows", "spark_rows_per_s", "pandas_rows_per_s", "spark_over_pandas_speed",
                 "spark_peak_total_mib", "spark_peak_jvm_mib", "pandas_peak_mib",
                 "spark_rows_out", "pandas_rows_out")
    positive(report["scaling"], "spark_time_big_over_small", "pandas_time_big_over_small")
    assert report["scaling"]["rows_big_over_small"] == 2.0


def test_resample(tmp_path):
    report = run_quick("resample", tmp_path)
    got = {(r["impl"], r["method"]) for r in report["results"]}
    assert got == {("scan", "-")} | {(impl, m) for impl in ("starscale", "imblearn_labels",
                                                              "imblearn_table")
                                     for m in ("random_under", "random_over")}
    for row in report["results"]:
        positive(row, "seconds", "rows_per_s", "peak_total_mib")
    # exact imblearn counts on both engines: the same number of rows out per method
    out = {(r["impl"], r["method"]): r["rows_out"] for r in report["results"]}
    for method in ("random_under", "random_over"):
        assert out[("starscale", method)] == out[("imblearn_labels", method)] \
            == out[("imblearn_table", method)] > 0


def test_input_pipeline(tmp_path):
    report = run_quick("input_pipeline", tmp_path)
    assert [r["side"] for r in report["results"]] == ["input_pipeline", "lstm_consumption"]
    for row in report["results"]:
        positive(row, "samples_per_s")
    positive(report, "input_over_consumption")


def test_input_feed(tmp_path):
    out = tmp_path / "input_feed.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "input_pipeline.py"), "--feed",
                           "--quick", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "input_feed" and report["quick"] is True
    assert report["command"].startswith("python bench/input_pipeline.py --feed")
    assert [(r["case"], r["consumer"], r["prefetch"], r["review_ids"]) for r in report["results"]] \
        == [("rank pipeline", "compiled step", "AUTOTUNE", False),
            ("before: prefetch 2 + review ids", "compiled step", 2, True),
            ("rank pipeline, Keras fit", "Keras model.fit", "AUTOTUNE", False)]
    for row in report["results"]:
        positive(row, "samples_per_s", "samples_per_cpu_s")
    assert report["target"] == 150_000 and report["batch_size"] == 32


def test_lstm_throughput(tmp_path):
    report = run_quick("lstm_throughput", tmp_path)
    assert [r["side"] for r in report["results"]] == ["study", "starscale_1", "starscale_2"]
    for row in report["results"]:
        positive(row, "samples_per_s", "train_seconds", "peak_mib", "steps_per_rank")
    assert set(report["overheads"]) == {"streaming_overhead_pct", "horovod_overhead_pct",
                                        "two_workers_over_study"}


def test_trainer_memory(tmp_path):
    report = run_quick("trainer_memory", tmp_path)
    assert [r["rows"] for r in report["results"]] == [2000, 20000]
    for row in report["results"]:
        positive(row, "rank_peak_mib", "study_peak_mib")
    positive(report["ratios"], "rank_peak_big_over_small", "study_peak_big_over_small")


def test_lr(tmp_path):
    report = run_quick("lr", tmp_path)
    assert {(r["rows"], r["engine"]) for r in report["results"]} == {
        (n, e) for n in (2000, 4000) for e in ("mllib", "sklearn")}
    for row in report["results"]:
        positive(row, "fit_seconds", "seconds", "iterations", "peak_mib")
        assert 0 < row["score"] <= 1


def test_demo_stages(tmp_path):
    report = run_quick("demo_stages", tmp_path)
    assert [r["stage"] for r in report["results"]] == ["make-corpus", "ingest", "prepare"]
    for row in report["results"]:
        assert row["rc"] == [0], row["error_tail"]
        positive(row, "seconds")


def test_scale(tmp_path):
    # One size and the stages up to sample (5 processes, ≈1–2 min): the whole --quick run
    # (2 sizes × 13 processes) is too long for the suite; docs/scale.md has its command.
    report = run_quick("scale", tmp_path, "--sizes", "2000", "--samplers", "random_under",
                       "--stages", "make-corpus,ingest,prepare,scan,sample")
    assert report["complete"] is True
    assert [(r["stage"], r["cell"]) for r in report["results"]] == [
        ("make-corpus", ""), ("ingest", ""), ("prepare", ""), ("scan", "train"),
        ("sample", "random_under")]
    for row in report["results"]:
        assert row["rc"] == 0, row.get("error_tail")
        positive(row, "wall_s", "seconds", "rows_out", "rows_per_s", "peak_jvm_mib",
                 "peak_python_mib", "tasks", "longest_task_s")
        assert row["spark"]["stages"], row["key"]        # the event log was written and read
    by = {r["stage"]: r for r in report["results"]}
    assert by["make-corpus"]["rows_out"] == 2000
    assert by["ingest"]["rows_in"] == 2000
    # each stage's rows in are the rows its upstream published
    assert by["prepare"]["rows_in"] == by["ingest"]["rows_out"]
    assert by["sample"]["rows_in"] == by["scan"]["rows_in"] < by["prepare"]["rows_out"]
    positive(by["ingest"], "shuffle_write_mib")
    [vs] = report["sample_vs_scan"]
    positive(vs, "sample_over_scan", "sample_over_copy")
    assert report["linearity"] == []                     # one size: nothing to compare


@pytest.mark.skipif(not (REPO / "bench" / "gpu_smoke.py").exists(), reason="no gpu_smoke.py")
def test_gpu(tmp_path):
    report = run_quick("gpu", tmp_path)
    assert [r["case"] for r in report["results"]] == ["cudnn_candidate", "recurrent_dropout"]
    for row in report["results"]:
        positive(row, "samples_per_s", "samples_per_s_steady", "epoch_hours_projected")
