"""bench/eventlog.py on a tiny hand-written Spark event log; every expectation worked out by hand.

The log: stage 0 (8 scan tasks, one slow and large, one spilling), stage 1 (4 shuffle-read
tasks, one failed, plus a task end without metrics, which never ran), stage 2 (8 tasks, only
one of which reads rows: the median is 0), executor-metrics records, and a last line cut in
half as in a log still `.inprogress` when its run was killed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import eventlog  # noqa: E402


def task_end(stage, run_ms, *, records=0, input_bytes=0, shuffle_records=0, local=0, remote=0,
             written=0, written_records=0, spill_mem=0, spill_disk=0, peak=0, failed=False,
             heap=None):
    metrics = {"Executor Run Time": run_ms, "Memory Bytes Spilled": spill_mem,
               "Disk Bytes Spilled": spill_disk, "Peak Execution Memory": peak,
               "Input Metrics": {"Bytes Read": input_bytes, "Records Read": records},
               "Shuffle Read Metrics": {"Local Bytes Read": local, "Remote Bytes Read": remote,
                                        "Total Records Read": shuffle_records},
               "Shuffle Write Metrics": {"Shuffle Bytes Written": written,
                                         "Shuffle Records Written": written_records}}
    event = {"Event": "SparkListenerTaskEnd", "Stage ID": stage, "Stage Attempt ID": 0,
             "Task Info": {"Failed": failed, "Killed": False}, "Task Metrics": metrics}
    if heap is not None:
        event["Task Executor Metrics"] = {"JVMHeapMemory": heap}
    return event


def stage_info(kind, stage, name):
    return {"Event": kind, "Stage Info": {"Stage ID": stage, "Stage Name": name}}


EVENTS = [
    {"Event": "SparkListenerLogStart", "Spark Version": "3.5.7"},
    stage_info("SparkListenerStageSubmitted", 0, "parquet at scan"),
    *[task_end(0, ms, records=100, input_bytes=1000, written=50, written_records=10)
      for ms in (1000, 1000, 1000, 1000, 2000, 2000, 2000)],
    task_end(0, 9000, records=400, input_bytes=1000, written=50, written_records=10,
             spill_mem=5000, spill_disk=700, peak=4096, heap=200_000_000),
    stage_info("SparkListenerStageCompleted", 0, "parquet at scan"),
    {"Event": "SparkListenerStageExecutorMetrics", "Executor ID": "driver", "Stage ID": 0,
     "Executor Metrics": {"JVMHeapMemory": 123_456_789}},
    stage_info("SparkListenerStageSubmitted", 1, "collect at window"),
    task_end(1, 250, failed=True),
    task_end(1, 250, shuffle_records=20, local=100),
    task_end(1, 500, shuffle_records=30, local=100),
    task_end(1, 500, shuffle_records=30, local=100, remote=50),
    {"Event": "SparkListenerTaskEnd", "Stage ID": 1, "Task Info": {"Failed": True}},
    stage_info("SparkListenerStageCompleted", 1, "collect at window"),
    {"Event": "SparkListenerStageExecutorMetrics", "Executor ID": "driver", "Stage ID": 1,
     "Executor Metrics": {"JVMHeapMemory": 0}},
    *[task_end(2, 125) for _ in range(7)],
    task_end(2, 125, shuffle_records=50),
]

STAGE_0 = {"stage_id": 0, "name": "parquet at scan", "tasks": 8, "failed_tasks": 0,
           "task_seconds": 19.0, "max_task_s": 9.0, "median_task_s": 1.5, "time_skew": 6.0,
           "max_task_rows": 400, "median_task_rows": 100, "rows_skew": 4.0,
           "input_rows": 1100, "input_bytes": 8000, "shuffle_read_rows": 0,
           "shuffle_read_bytes": 0, "shuffle_write_rows": 80, "shuffle_write_bytes": 400,
           "memory_spilled_bytes": 5000, "disk_spilled_bytes": 700, "peak_execution_bytes": 4096}
STAGE_1 = {"stage_id": 1, "name": "collect at window", "tasks": 4, "failed_tasks": 1,
           "task_seconds": 1.5, "max_task_s": 0.5, "median_task_s": 0.375,
           "time_skew": 0.5 / 0.375, "max_task_rows": 30, "median_task_rows": 25,
           "rows_skew": 1.2, "input_rows": 0, "input_bytes": 0, "shuffle_read_rows": 80,
           "shuffle_read_bytes": 350, "shuffle_write_rows": 0, "shuffle_write_bytes": 0,
           "memory_spilled_bytes": 0, "disk_spilled_bytes": 0, "peak_execution_bytes": 0}
STAGE_2 = {"stage_id": 2, "name": "", "tasks": 8, "failed_tasks": 0,
           "task_seconds": 1.0, "max_task_s": 0.125, "median_task_s": 0.125, "time_skew": 1.0,
           "max_task_rows": 50, "median_task_rows": 0, "rows_skew": None,
           "input_rows": 0, "input_bytes": 0, "shuffle_read_rows": 50,
           "shuffle_read_bytes": 0, "shuffle_write_rows": 0, "shuffle_write_bytes": 0,
           "memory_spilled_bytes": 0, "disk_spilled_bytes": 0, "peak_execution_bytes": 0}


@pytest.fixture()
def log_dir(tmp_path):
    folder = tmp_path / "eventlog"
    folder.mkdir()
    text = "".join(json.dumps(e) + "\n" for e in EVENTS)
    # killed mid-write: the last line is half an event
    (folder / "local-1700000000000.inprogress").write_text(
        text + '{"Event":"SparkListenerTaskEnd","Stage ID":0,"Task')
    return folder


def test_stage_metrics(log_dir):
    events = list(eventlog.read_events(next(log_dir.iterdir())))
    assert len(events) == len(EVENTS)
    assert eventlog.stage_metrics(events) == [pytest.approx(STAGE_0), pytest.approx(STAGE_1),
                                              pytest.approx(STAGE_2)]


def test_summarize_log(log_dir):
    summary = eventlog.summarize_log(log_dir)
    assert summary == pytest.approx({
        "files": ["local-1700000000000.inprogress"], "spark_stages": 3, "tasks": 20,
        "failed_tasks": 1, "task_seconds": 21.5, "input_rows": 1100, "input_bytes": 8000,
        "shuffle_read_rows": 130, "shuffle_read_bytes": 350, "shuffle_write_rows": 80,
        "shuffle_write_bytes": 400, "memory_spilled_bytes": 5000, "disk_spilled_bytes": 700,
        "longest_task_s": 9.0, "longest_task_stage": 0, "jvm_heap_peak_bytes": 200_000_000,
        # stage 1 has fewer than 8 tasks; stage 2's row skew is unbounded (median 0)
        "worst_time_skew": pytest.approx(STAGE_0), "worst_rows_skew": pytest.approx(STAGE_2),
        "stages": [pytest.approx(STAGE_0), pytest.approx(STAGE_1), pytest.approx(STAGE_2)]})


def test_worst_stage_threshold_and_empty(tmp_path):
    stages = [STAGE_0, STAGE_1, STAGE_2]
    assert eventlog.worst_stage(stages, "time_skew", min_tasks=4) == STAGE_0
    assert eventlog.worst_stage(stages, "rows_skew", min_tasks=9) is None
    assert eventlog.summarize_log(tmp_path / "none") is None
    assert eventlog.jvm_heap_peak([{"Event": "SparkListenerStageExecutorMetrics",
                                    "Executor Metrics": {"JVMHeapMemory": 0}}]) is None
