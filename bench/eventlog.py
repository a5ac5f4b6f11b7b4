"""Spark event logs → shuffle, spill and skew per Spark stage (pure functions, no Spark needed).

A run with `spark.eventLog.enabled=true` writes one JSON object per line (JsonProtocol). Only
these events are read:
- SparkListenerTaskEnd: "Stage ID", "Task Info" (Failed / Killed), "Task Metrics" with
  "Executor Run Time" (ms), "Memory Bytes Spilled", "Disk Bytes Spilled",
  "Peak Execution Memory", "Input Metrics" {"Bytes Read", "Records Read"},
  "Shuffle Read Metrics" {"Local Bytes Read", "Remote Bytes Read", "Total Records Read"},
  "Shuffle Write Metrics" {"Shuffle Bytes Written", "Shuffle Records Written"},
  and "Task Executor Metrics" {"JVMHeapMemory", ...} when Spark records it;
- SparkListenerStageSubmitted / SparkListenerStageCompleted: "Stage Info" {"Stage ID",
  "Stage Name"} for the stage's name;
- SparkListenerStageExecutorMetrics: "Executor Metrics" {"JVMHeapMemory"} (with
  spark.eventLog.logStageExecutorMetrics=true; the values are 0 unless Spark polls them,
  spark.executor.metrics.pollingInterval > 0, or a heartbeat fell inside the stage).

A task's input rows are the rows it read from a source (Input Metrics: files, cached blocks)
plus the rows it read from a shuffle, so one number covers scan and shuffle stages. Attempts of
a stage are pooled under its stage id. Skew of a stage = max / median over its tasks (the median
of an even count is the mean of the two middle values); when the median is 0 the ratio is 1.0 if
the max is 0 too (nothing to skew) and None (unbounded) otherwise.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Iterable, Iterator

MIN_SKEW_TASKS = 8       # issue 14: the skew target applies to stages with 8 or more tasks


def read_events(path: str | Path) -> Iterator[dict]:
    """The events of one event-log file, in order. A log still `.inprogress` (the run was
    killed) may end in half a line: that line is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def event_log_files(folder: str | Path) -> list[Path]:
    """Every event-log file in a folder (one per SparkContext that logged there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def ratio(top: float, middle: float) -> float | None:
    """max / median, with 0/0 = 1.0 (no skew) and x/0 = None (unbounded)."""
    if middle > 0:
        return top / middle
    return 1.0 if top == 0 else None


def stage_metrics(events: Iterable[dict]) -> list[dict]:
    """One summary per Spark stage that ended at least one task, by stage id:

    stage_id, name, tasks, failed_tasks, task_seconds (sum of executor run time),
    max_task_s, median_task_s, time_skew, max_task_rows, median_task_rows, rows_skew,
    input_rows, input_bytes, shuffle_read_rows, shuffle_read_bytes, shuffle_write_rows,
    shuffle_write_bytes, memory_spilled_bytes, disk_spilled_bytes, peak_execution_bytes
    (the largest of one task).
    """
    names: dict[int, str] = {}
    tasks: dict[int, list[dict]] = {}
    for event in events:
        kind = event.get("Event")
        if kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
            info = event.get("Stage Info") or {}
            if "Stage ID" in info:
                names[int(info["Stage ID"])] = info.get("Stage Name", "")
        elif kind == "SparkListenerTaskEnd":
            metrics = event.get("Task Metrics")
            if metrics is None:          # a task that never ran (e.g. killed before start)
                continue
            info = event.get("Task Info") or {}
            tasks.setdefault(int(event["Stage ID"]), []).append(
                {"run_ms": metrics.get("Executor Run Time", 0),
                 "failed": bool(info.get("Failed") or info.get("Killed")),
                 **_task_io(metrics)})
    out = []
    for stage_id in sorted(tasks):
        ts = tasks[stage_id]
        run_s = [t["run_ms"] / 1000.0 for t in ts]
        rows = [t["input_rows"] + t["shuffle_read_rows"] for t in ts]
        out.append({
            "stage_id": stage_id, "name": names.get(stage_id, ""),
            "tasks": len(ts), "failed_tasks": sum(t["failed"] for t in ts),
            "task_seconds": sum(run_s),
            "max_task_s": max(run_s), "median_task_s": statistics.median(run_s),
            "time_skew": ratio(max(run_s), statistics.median(run_s)),
            "max_task_rows": max(rows), "median_task_rows": statistics.median(rows),
            "rows_skew": ratio(max(rows), statistics.median(rows)),
            **{key: sum(t[key] for t in ts) for key in _SUMMED},
            "peak_execution_bytes": max(t["peak_execution_bytes"] for t in ts),
        })
    return out


_SUMMED = ("input_rows", "input_bytes", "shuffle_read_rows", "shuffle_read_bytes",
           "shuffle_write_rows", "shuffle_write_bytes", "memory_spilled_bytes",
           "disk_spilled_bytes")


def _task_io(metrics: dict) -> dict:
    read = metrics.get("Shuffle Read Metrics") or {}
    write = metrics.get("Shuffle Write Metrics") or {}
    source = metrics.get("Input Metrics") or {}
    return {
        "input_rows": source.get("Records Read", 0),
        "input_bytes": source.get("Bytes Read", 0),
        "shuffle_read_rows": read.get("Total Records Read", 0),
        "shuffle_read_bytes": read.get("Local Bytes Read", 0) + read.get("Remote Bytes Read", 0),
        "shuffle_write_rows": write.get("Shuffle Records Written", 0),
        "shuffle_write_bytes": write.get("Shuffle Bytes Written", 0),
        "memory_spilled_bytes": metrics.get("Memory Bytes Spilled", 0),
        "disk_spilled_bytes": metrics.get("Disk Bytes Spilled", 0),
        "peak_execution_bytes": metrics.get("Peak Execution Memory", 0),
    }


def jvm_heap_peak(events: Iterable[dict]) -> int | None:
    """The largest JVMHeapMemory (bytes: heap in use, garbage included) any executor-metrics
    record reports (in local mode the driver's heap, which holds the executors), or None when
    the log has none above 0 (metrics not polled)."""
    peak = None
    for event in events:
        kind = event.get("Event")
        if kind == "SparkListenerStageExecutorMetrics":
            found = (event.get("Executor Metrics") or {}).get("JVMHeapMemory")
        elif kind == "SparkListenerTaskEnd":
            found = (event.get("Task Executor Metrics") or {}).get("JVMHeapMemory")
        else:
            continue
        if found and (peak is None or found > peak):
            peak = found
    return peak


def _skew_key(value: float | None) -> float:
    return float("inf") if value is None else value


def worst_stage(stages: list[dict], key: str = "time_skew",
                min_tasks: int = MIN_SKEW_TASKS) -> dict | None:
    """The stage with the largest `key` (time_skew or rows_skew; None = unbounded ranks first)
    among stages with at least min_tasks tasks; ties go to the stage with more task time."""
    eligible = [s for s in stages if s["tasks"] >= min_tasks]
    if not eligible:
        return None
    return max(eligible, key=lambda s: (_skew_key(s[key]), s["task_seconds"]))


def totals(stages: list[dict]) -> dict:
    """Sums over every stage (tasks, task seconds, rows and bytes read / written / spilled)
    and the longest single task with its stage."""
    out = {"spark_stages": len(stages), "tasks": sum(s["tasks"] for s in stages),
           "failed_tasks": sum(s["failed_tasks"] for s in stages),
           "task_seconds": sum(s["task_seconds"] for s in stages),
           **{key: sum(s[key] for s in stages) for key in _SUMMED}}
    longest = max(stages, key=lambda s: s["max_task_s"], default=None)
    out["longest_task_s"] = longest["max_task_s"] if longest else 0.0
    out["longest_task_stage"] = longest["stage_id"] if longest else None
    return out


def summarize_log(folder: str | Path, min_tasks: int = MIN_SKEW_TASKS) -> dict | None:
    """Everything one run's event-log folder says: totals, the worst stage by task-time skew
    and by input-row skew (stages with ≥ min_tasks tasks), the JVM heap peak and every stage.
    None when the folder holds no log."""
    files = event_log_files(folder)
    if not files:
        return None
    events = [e for f in files for e in read_events(f)]
    stages = stage_metrics(events)
    return {"files": [f.name for f in files], **totals(stages),
            "jvm_heap_peak_bytes": jvm_heap_peak(events),
            "worst_time_skew": worst_stage(stages, "time_skew", min_tasks),
            "worst_rows_skew": worst_stage(stages, "rows_skew", min_tasks),
            "stages": stages}
