"""Shared helpers of the benchmark scripts: arguments, timing, peak memory, machine, JSON.

Every script runs each measured side `--repeats` times (default 3) in the same invocation and
reports medians. Peak memory is the PSS (proportional set size: RSS with each shared page split among the
processes sharing it, so forked workers are not counted several times), sampled with psutil
every SAMPLE_S seconds over a process tree:
the Python process itself ("python"), Java processes below it ("jvm": the Spark driver JVM,
whose executor threads run inside it in local mode) and every other descendant ("workers":
Spark's Python workers, Horovod ranks). "total" is the peak of the sum, not the sum of peaks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "out" / "bench"                  # every generated input and output (gitignored)
DOCS_BENCH = REPO / "docs" / "bench"           # full-mode JSON results
QUICK_BENCH = WORK / "quick"                   # --quick JSON results (not the published numbers)
REAL_DATA = REPO.parent / "shared" / "data" / "amazon_reviews_us_Digital_Software_v1_00.tsv.gz"
SAMPLE_S = 0.2
MIB = 1024 * 1024

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The arguments every script takes: --quick, --repeats, --out."""
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny inputs, to check that the script runs (numbers mean nothing)")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per measured side; the median is reported (default 3, quick 1)")
    p.add_argument("--out", default=None,
                   help=f"JSON output (default docs/bench/{name}.json, quick: out/bench/quick/)")
    return p


def finish_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    if args.out is None:
        args.out = str((QUICK_BENCH if args.quick else DOCS_BENCH) / f"{name}.json")
    return args


# --------------------------------------------------------------------------- memory
def _classify(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "python"
    try:
        name = proc.name()
    except psutil.Error:
        return "workers"
    return "jvm" if name.startswith("java") else "workers"


def _pss(proc: psutil.Process) -> int:
    """Proportional set size (shared pages split among their sharers): forked Spark Python
    workers share most pages with their daemon, and RSS would count those pages per worker."""
    try:
        return proc.memory_full_info().pss
    except (psutil.AccessDenied, AttributeError):
        return proc.memory_info().rss


class PeakMemory:
    """Context manager: peak PSS (bytes) of a process tree, by kind, sampled in a thread.

    root: the pid whose tree is sampled (default this process). include_root=False leaves the
    root out (e.g. horovodrun itself when only the ranks matter). per_process=True also keeps
    each descendant's own peak (keyed by pid) in `.per_pid`.
    """

    def __init__(self, root: int | None = None, include_root: bool = True,
                 descendants: bool = True, per_process: bool = False):
        self.root = root or os.getpid()
        self.include_root = include_root
        self.descendants = descendants
        self.per_process = per_process
        self.peak: dict[str, int] = {"python": 0, "jvm": 0, "workers": 0, "total": 0}
        self.per_pid: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = ([root] if self.include_root else []) + (
                root.children(recursive=True) if self.descendants else [])
        except psutil.Error:
            return
        now = {"python": 0, "jvm": 0, "workers": 0}
        for proc in procs:
            try:
                rss = _pss(proc)
            except psutil.Error:
                continue
            now[_classify(proc, self.root)] += rss
            if self.per_process and proc.pid != self.root:
                entry = self.per_pid.setdefault(proc.pid, {"peak": 0, "cmd": ""})
                entry["peak"] = max(entry["peak"], rss)
                if not entry["cmd"]:
                    try:
                        entry["cmd"] = " ".join(proc.cmdline())[:300]
                    except psutil.Error:
                        pass
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)
        self.peak["total"] = max(self.peak["total"], sum(now.values()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()

    def mib(self) -> dict[str, float]:
        return {k: round(v / MIB, 1) for k, v in self.peak.items()}


def measure(fn: Callable[[], Any], **memory_kwargs) -> tuple[Any, float, dict[str, float]]:
    """(fn's result, wall seconds, peak PSS MiB by kind) of one call."""
    with PeakMemory(**memory_kwargs) as mem:
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
    return result, seconds, mem.mib()


def median(values) -> float:
    return float(statistics.median(values))


def summarize_runs(runs: list[dict]) -> dict:
    """Per numeric key of the runs, the median (key) and every value (key_runs)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = round(median(values), 4)
            out[key + "_runs"] = [round(float(v), 4) for v in values]
        elif all(isinstance(v, dict) for v in values):
            out[key] = summarize_runs(values)
        else:
            out[key] = values[-1]
    return out


# --------------------------------------------------------------------------- machine
def machine() -> dict:
    """Cores, memory, load average now (the machine is shared: say what else ran)."""
    vm = psutil.virtual_memory()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(vm.total / 1024 ** 3, 1),
            "available_gib": round(vm.available / 1024 ** 3, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_report(args: argparse.Namespace, name: str, results: list[dict], extra: dict | None = None,
                 started_machine: dict | None = None, script: str | None = None) -> dict:
    """Write the JSON report (results + machine at start and end + the command) and return it.
    script: the bench script's name when it is not the report's name."""
    report = {
        "benchmark": name, "quick": bool(args.quick), "repeats": args.repeats,
        "command": "python " + " ".join([f"bench/{script or name}.py", *sys.argv[1:]]),
        "machine_start": started_machine or machine(), "machine_end": machine(),
        "results": results, **(extra or {}),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(out)
    print(f"\nwrote {out}")
    return report


def print_table(rows: list[dict], columns: list[str], title: str = "") -> None:
    """A plain text table of the given columns (missing → '')."""
    if title:
        print(f"\n{title}")
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --------------------------------------------------------------------------- Spark
def spark_session(extra_conf: dict | None = None):
    """A local[2] session from conf/local.yaml (UI and progress bars off)."""
    from starscale.config import load_config
    from starscale.spark import build_session
    cfg = load_config([str(REPO / "conf" / "local.yaml")],
                      ["spark.log_level=ERROR", 'spark.conf.spark.ui.showConsoleProgress="false"',
                       *[f'spark.conf.{k}="{v}"' for k, v in (extra_conf or {}).items()]])
    return build_session(cfg.spark, "bench")


def local_config(output_dir: Path, *overrides: str, conf: list[str] | None = None):
    """A Config from base + conf/local.yaml (+ conf files) writing under output_dir."""
    from starscale.config import load_config
    return load_config([str(REPO / "conf" / "local.yaml"), *(conf or [])],
                       [f"run.output_dir={output_dir}", *overrides])


def synthetic_corpus(spark, rows: int, part_files: int) -> list[str]:
    """The make-corpus TSV files of `rows` rows under out/bench/data (generated once, cached by
    the stage's manifest); returns the part files' paths."""
    from starscale import storage
    from starscale.stages import make_corpus
    cfg = local_config(WORK / "data" / f"corpus_{rows}", f"corpus.rows={rows}",
                       f"corpus.part_files={part_files}", f"corpus.partitions={max(2, part_files)}")
    summary = make_corpus.run(spark, cfg)
    files = storage.data_dir(spark, cfg.stage_dir("corpus"))     # a published folder's files
    return [str(Path(files) / f) for f in summary["files"]]
