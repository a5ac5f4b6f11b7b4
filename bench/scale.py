"""Benchmark 9 (issue 14, point 4): the data pipeline at 1M, 3M and 9,002,021 rows, stage by stage.

For each size N every stage runs as its own process, as a user runs it, with the shipped
conf/local.yaml (local[2], 4g driver; no extra memory: the point is that the defaults work):

    python -m starscale STAGE --conf conf/local.yaml [--conf FILE ...] --force \
        --set run.output_dir=out/bench/scale/N --set corpus.rows=N ... [--set KEY=VALUE ...]

Stages: make-corpus (corpus.rows=N, the Wireless star mix of conf/base.yaml), ingest, prepare,
scan (the baseline: a plain Parquet scan of prepare's train rows, the input of sample),
sample (random_under and none, sample.size=full), encode (4,000 top-count TF-IDF and 2^20
hashed, for each sampler of --fit-samplers), train-lr (MLlib, on each encode cell).

Recorded per stage and size: wall seconds of the process (JVM start included) and the stage's
own seconds (its manifest's `seconds`: inside the stage, the basis of rows/s and linearity),
rows in / out and rows/s, peak PSS of the stage's Python driver, its JVM and Spark's Python
workers (common.PeakMemory over the process tree), the disk its output takes, and from the
event log Spark writes for that process (spark.eventLog.* passed with --set, one folder per
stage run): shuffle read / write, spill (memory, disk), the JVM heap peak, and skew per Spark
stage (bench/eventlog.py): the worst Spark stage with >= 8 tasks by max/median task time and by
max/median task input rows. train-lr adds iterations run, fit seconds and seconds per
iteration (--lr-max-iter caps the iterations). Derived: linearity (seconds per row at the
largest size / at the smallest, per stage), driver memory growth, and sample's time over the
scan's. Each stage's log: out/bench/scale/N/logs/; its event log: out/bench/scale/N/eventlog/.
The JSON is rewritten after every stage, so a run cut short keeps what it measured.

    python bench/scale.py                          # 1M, 3M, 9,002,021 rows (hours: docs/scale.md)
    python bench/scale.py --sizes 9002021 --lr-max-iter 10 --merge   # add 9M to the report there
    python bench/scale.py --sizes 1000000 --stages make-corpus,ingest,prepare
    python bench/scale.py --quick                  # 3k and 6k rows: does it run (numbers mean nothing)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import eventlog  # noqa: E402

NAME = "scale"
ROOT = common.WORK / "scale"                   # out/bench/scale/<N>/
SIZES = (1_000_000, 3_000_000, 9_002_021)
QUICK_SIZES = (3000, 6000)
QUICK_LR_MAX_ITER = 5
STAGES = ("make-corpus", "ingest", "prepare", "scan", "sample", "encode", "train-lr")
SAMPLERS = ("random_under", "none")
# encode cells: name → (encode.tfidf_features, encode.tfidf_hashed)
FEATURES = {"top4000": (4000, False), "hash1048576": (1_048_576, True)}
# make-corpus: 1.2M rows per part file at most (the 9M run: 8 files, 16 partitions)
ROWS_PER_PART_FILE = 1_200_000
# As --set values these must stay strings: a bare true would be read as a YAML bool, which
# spark.conf (a str → str mapping) rejects. Polling makes the executor metrics (JVM heap) real.
EVENT_LOG_CONF = {"spark.eventLog.enabled": "true", "spark.eventLog.compress": "false",
                  "spark.eventLog.logStageExecutorMetrics": "true",
                  "spark.executor.metrics.pollingInterval": "1s"}
SCAN_RUNS = 3
# issue 14's targets (reported as flags, never asserted)
TARGET_SKEW = 3.0
TARGET_LINEARITY = 1.15
TARGET_SAMPLE_OVER_SCAN = 2.0
OUTPUT_FOLDERS = ("corpus", "ingest", "prepare", "sample", "encode", "models", "results")


@dataclass(frozen=True)
class Step:
    """One process to run at each size: a starscale stage (or the scan) in one cell."""
    key: str                     # e.g. "encode:random_under:top4000" (unique per size)
    stage: str                   # starscale stage, or "scan"
    cell: str                    # sampler[/features], "" for the shared stages
    overrides: tuple[str, ...]   # --set items of this cell
    needs: tuple[str, ...] = ()  # keys of the steps whose output it reads


def cell_overrides(sampler: str | None = None, features: str | None = None,
                   lr_max_iter: int | None = None) -> tuple[str, ...]:
    """--set items of one cell: its sampler, its TF-IDF setting, the LR engine and cap."""
    out = ["sample.size=full"]
    if sampler:
        out.append(f"sample.method={sampler}")
    if features:
        n, hashed = FEATURES[features]
        out += [f"encode.tfidf_features={n}", f"encode.tfidf_hashed={str(hashed).lower()}",
                "lr.engine=mllib"]
    if lr_max_iter:
        out.append(f"lr.max_iter={lr_max_iter}")
    return tuple(out)


def plan(stages: list[str], samplers: list[str], fit_samplers: list[str], features: list[str],
         lr_max_iter: int | None) -> list[Step]:
    """The steps of one size, in run order, restricted to `stages`."""
    steps = [Step("make-corpus", "make-corpus", "", cell_overrides()),
             Step("ingest", "ingest", "", cell_overrides(), ("make-corpus",)),
             Step("prepare", "prepare", "", cell_overrides(), ("ingest",)),
             Step("scan", "scan", "train", cell_overrides(), ("prepare",))]
    steps += [Step(f"sample:{m}", "sample", m, cell_overrides(m), ("prepare",)) for m in samplers]
    for m in fit_samplers:
        steps += [Step(f"encode:{m}:{f}", "encode", f"{m}/{f}", cell_overrides(m, f),
                       (f"sample:{m}",)) for f in features]
    for m in fit_samplers:
        steps += [Step(f"train-lr:{m}:{f}", "train-lr", f"{m}/{f}",
                       cell_overrides(m, f, lr_max_iter), (f"encode:{m}:{f}",))
                  for f in features]
    return [s for s in steps if s.stage in stages]


def size_overrides(rows: int) -> list[str]:
    part_files = max(4, -(-rows // ROWS_PER_PART_FILE))
    return [f"run.output_dir={ROOT / str(rows)}", f"corpus.rows={rows}",
            f"corpus.part_files={part_files}", f"corpus.partitions={2 * part_files}"]


def event_log_overrides(folder: Path) -> list[str]:
    conf = {**EVENT_LOG_CONF, "spark.eventLog.dir": folder.resolve().as_uri()}
    return [f'spark.conf.{k}="{v}"' for k, v in conf.items()]


def step_config(step: Step, rows: int, confs: list[str], user_sets: list[str]):
    """The stage's resolved Config (paths only; built as the stage process builds it)."""
    return common.local_config(ROOT / str(rows), *size_overrides(rows), *step.overrides,
                               *user_sets, conf=confs)


def output_of(step: Step, cfg) -> str | None:
    """The folder the step publishes (holding its _MANIFEST.json); None for the scan."""
    from starscale import layout
    return None if step.stage == "scan" else layout.stage_output(step.stage, cfg)


def rows_of(stage: str, manifest: dict) -> tuple[int | None, int | None]:
    """(rows in, rows out) of a stage from its manifest (or the scan's JSON)."""
    if stage == "make-corpus":
        return None, manifest["rows"]
    if stage == "ingest":
        t = manifest["totals"]
        return t["lines"] - t["header_lines"], t["accepted"]
    if stage == "prepare":
        return manifest["rows_in"], manifest["rows_out"]
    if stage == "sample":
        return manifest["rows_before"], manifest["rows_after"]
    if stage == "encode":
        return (sum(manifest["rows_by_split_in"].values()),
                sum(manifest["features_rows"].values()))
    if stage == "train-lr":
        return manifest["train_rows"], manifest["test_rows"]
    if stage == "scan":
        return manifest["rows"], manifest["rows"]
    raise ValueError(f"unknown stage {stage!r}")


def command(step: Step, rows: int, args, events: Path, scan_json: Path) -> list[str]:
    sets = [*size_overrides(rows), *step.overrides, *event_log_overrides(events), *args.overrides]
    confs = [x for c in args.conf for x in ("--conf", c)]
    if step.stage == "scan":
        head = [sys.executable, str(Path(__file__).resolve()), "--scan", "--out", str(scan_json)]
    else:
        head = [sys.executable, "-m", "starscale", step.stage]
        head += [] if args.reuse else ["--force"]
    return [*head, "--conf", "conf/local.yaml", *confs, *[x for s in sets for x in ("--set", s)]]


def disk_mib(path: str | Path | None) -> float | None:
    if not path or not os.path.exists(path):
        return None
    total = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return round(total / common.MIB, 1)


def run_process(cmd: list[str], log: Path) -> tuple[int, float, dict]:
    """Run cmd (output to log) in its own process group; (rc, wall seconds, peak PSS MiB)."""
    env = dict(os.environ)
    # The checkout's own lib first: the venv's editable install may point at another checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.REPO / "lib"),
                                                    env.get("PYTHONPATH")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=common.REPO, stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            with common.PeakMemory(root=proc.pid) as mem:
                rc = proc.wait()
        except BaseException:
            # e.g. Ctrl-C: the stage's Python and its JVM are in their own group; stop them.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            raise
        wall = time.perf_counter() - started
    return rc, wall, mem.mib()


def mib(value: float | None) -> float | None:
    return None if value is None else round(value / common.MIB, 1)


def run_step(step: Step, rows: int, args) -> dict:
    size_dir = ROOT / str(rows)
    name = step.key.replace(":", "_")
    events = size_dir / "eventlog" / name
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    scan_json = size_dir / "scan.json"
    scan_json.unlink(missing_ok=True)
    log = size_dir / "logs" / f"{name}.log"
    output = output_of(step, step_config(step, rows, args.conf, args.overrides))
    started_utc = time.time()
    rc, wall, peak = run_process(command(step, rows, args, events, scan_json), log)
    row: dict = {"size": rows, "stage": step.stage, "cell": step.cell, "key": step.key, "rc": rc,
                 "wall_s": round(wall, 2), "log": str(log.relative_to(common.REPO))}
    if rc != 0:
        row["error_tail"] = log.read_text(errors="replace")[-2000:]
    manifest = None
    if rc == 0:
        source = scan_json if step.stage == "scan" else Path(output) / "_MANIFEST.json"
        try:
            manifest = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            row["error_tail"] = f"rc 0 but no readable {source}: {exc}"
    if manifest is not None:
        rows_in, rows_out = rows_of(step.stage, manifest)
        seconds = manifest["seconds"]
        basis = rows_in or rows_out
        row.update({"seconds": seconds, "rows_in": rows_in, "rows_out": rows_out,
                    "rows_per_s": round(basis / seconds, 1) if basis and seconds else None})
        if step.stage != "scan":
            created = manifest.get("created_utc", "")
            row["reused"] = bool(created) and _utc(created) < started_utc - 1
        if step.stage == "train-lr":
            iters = manifest["iterations"]
            row.update({"iterations": iters, "fit_seconds": manifest["fit_seconds"],
                        "s_per_iter": round(manifest["fit_seconds"] / iters, 3) if iters else None,
                        "score": manifest.get("score")})
        if step.stage == "scan":
            row.update({k: manifest[k] for k in ("scan_s_runs", "copy_s")})
    row.update({"peak_python_mib": peak["python"], "peak_jvm_mib": peak["jvm"],
                "peak_workers_mib": peak["workers"], "peak_total_mib": peak["total"],
                "output_mib": disk_mib(output)})
    spark = eventlog.summarize_log(events)
    if spark is not None:
        worst_t, worst_r = spark["worst_time_skew"], spark["worst_rows_skew"]
        row.update({
            "tasks": spark["tasks"], "failed_tasks": spark["failed_tasks"],
            "task_seconds": round(spark["task_seconds"], 2),
            "shuffle_read_mib": mib(spark["shuffle_read_bytes"]),
            "shuffle_write_mib": mib(spark["shuffle_write_bytes"]),
            "spill_memory_mib": mib(spark["memory_spilled_bytes"]),
            "spill_disk_mib": mib(spark["disk_spilled_bytes"]),
            "jvm_heap_peak_mib": mib(spark["jvm_heap_peak_bytes"]),
            "longest_task_s": round(spark["longest_task_s"], 2),
            "time_skew": _round(worst_t and worst_t["time_skew"]),
            "time_skew_stage": worst_t and stage_label(worst_t),
            "rows_skew": _round(worst_r and worst_r["rows_skew"]),
            "rows_skew_stage": worst_r and stage_label(worst_r),
            "skew_unbounded": bool((worst_t and worst_t["time_skew"] is None)
                                   or (worst_r and worst_r["rows_skew"] is None)),
            "spark": spark,
        })
    return row


def stage_label(stage: dict) -> str:
    """'13 parquet@NativeMethodAccessorImpl.java:0 ×8': Spark stage id, its action and call
    site (file name only), its task count."""
    action, _, site = stage["name"].partition(" at ")
    return f"{stage['stage_id']} {action}@{os.path.basename(site)} ×{stage['tasks']}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _utc(iso: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(iso).timestamp()


# --------------------------------------------------------------------------- derived numbers
def linearity(results: list[dict]) -> list[dict]:
    """Per stage and cell measured ok at two or more sizes: seconds per row at the largest size
    over the smallest (1.0 = linear), the same per LR iteration, and the JVM's and Python's
    peak at the largest over the smallest (1.0 = flat)."""
    by: dict[tuple, list[dict]] = {}
    for r in results:
        if r["rc"] == 0 and r.get("seconds") and (r.get("rows_in") or r.get("rows_out")):
            by.setdefault((r["stage"], r["cell"]), []).append(r)
    out = []
    for (stage, cell), rs in by.items():
        sizes = sorted({r["size"] for r in rs})
        if len(sizes) < 2:
            continue
        lo = next(r for r in rs if r["size"] == sizes[0])
        hi = next(r for r in rs if r["size"] == sizes[-1])
        per_row = [r["seconds"] / (r["rows_in"] or r["rows_out"]) for r in (lo, hi)]
        entry = {"stage": stage, "cell": cell, "small": sizes[0], "large": sizes[-1],
                 "s_per_mrow_small": round(per_row[0] * 1e6, 2),
                 "s_per_mrow_large": round(per_row[1] * 1e6, 2),
                 "linearity": round(per_row[1] / per_row[0], 3),
                 "jvm_peak_ratio": _ratio(hi["peak_jvm_mib"], lo["peak_jvm_mib"]),
                 "jvm_heap_ratio": _ratio(hi.get("jvm_heap_peak_mib"), lo.get("jvm_heap_peak_mib")),
                 "python_peak_ratio": _ratio(hi["peak_python_mib"], lo["peak_python_mib"])}
        if stage == "train-lr" and lo.get("s_per_iter") and hi.get("s_per_iter"):
            entry["linearity_per_iter"] = round(
                (hi["s_per_iter"] / hi["rows_in"]) / (lo["s_per_iter"] / lo["rows_in"]), 3)
        entry["meets_target"] = entry.get("linearity_per_iter", entry["linearity"]) \
            <= TARGET_LINEARITY
        out.append(entry)
    return out


def _ratio(top, bottom) -> float | None:
    return round(top / bottom, 3) if top and bottom else None


def sample_vs_scan(results: list[dict]) -> list[dict]:
    """Per size and sampler: the sample stage's seconds over the plain scan's (median) and over
    a Parquet copy of the same rows (sample writes Parquet too)."""
    out = []
    for size in sorted({r["size"] for r in results}):
        scan = next((r for r in results if r["size"] == size and r["stage"] == "scan"
                     and r["rc"] == 0), None)
        if scan is None:
            continue
        scan_s = common.median(scan["scan_s_runs"])
        for r in results:
            if r["size"] == size and r["stage"] == "sample" and r["rc"] == 0:
                over = r["seconds"] / scan_s
                out.append({"size": size, "sampler": r["cell"], "sample_s": r["seconds"],
                            "scan_s": round(scan_s, 3), "copy_s": scan["copy_s"],
                            "sample_over_scan": round(over, 2),
                            "sample_over_copy": round(r["seconds"] / scan["copy_s"], 2),
                            "meets_target": over <= TARGET_SAMPLE_OVER_SCAN})
    return out


def skew_at_largest(results: list[dict]) -> list[dict]:
    """Per stage and cell at the largest size measured: the worst skew and whether it meets
    the target (max task time <= 3x the median in every Spark stage with >= 8 tasks)."""
    ok = [r for r in results if r["rc"] == 0 and "tasks" in r]
    if not ok:
        return []
    largest = max(r["size"] for r in ok)
    return [{"size": largest, "stage": r["stage"], "cell": r["cell"],
             "time_skew": r["time_skew"], "time_skew_stage": r["time_skew_stage"],
             "rows_skew": r["rows_skew"], "longest_task_s": r["longest_task_s"],
             "meets_target": r["time_skew_stage"] is None
             or (r["time_skew"] is not None and r["time_skew"] <= TARGET_SKEW)}
            for r in ok if r["size"] == largest]


# --------------------------------------------------------------------------- the scan baseline
def scan_main(args) -> None:
    """(--scan, in its own process) time a plain Parquet scan of prepare/reviews' train rows:
    SCAN_RUNS noop writes (read every column, keep nothing), then one Parquet copy."""
    from pyspark.sql import functions as F
    from starscale import layout, storage
    from starscale.config import load_config
    from starscale.spark import build_session
    from starscale.tables import PREPARE_REVIEWS_SCHEMA

    cfg = load_config([str(common.REPO / "conf" / "local.yaml"), *args.conf], args.overrides)
    spark = build_session(cfg.spark, "scan")
    prepare_dir = cfg.stage_dir("prepare")
    reviews = layout.join(storage.data_dir(spark, prepare_dir), layout.REVIEWS)
    started = time.perf_counter()

    def train_reviews():
        # what sample reads: the train rows of prepare/reviews, the columns it keeps
        return (spark.read.schema(PREPARE_REVIEWS_SCHEMA).parquet(reviews)
                .where(F.col("split") == "train").select("review_id", "star", "text"))

    runs = []
    for _ in range(SCAN_RUNS):
        t0 = time.perf_counter()
        train_reviews().write.format("noop").mode("overwrite").save()
        runs.append(round(time.perf_counter() - t0, 3))
    copy = os.path.join(cfg.run.output_dir, "scan_copy")
    t0 = time.perf_counter()
    train_reviews().write.mode("overwrite").parquet(copy)
    copy_s = round(time.perf_counter() - t0, 3)
    rows = spark.read.parquet(copy).count()
    shutil.rmtree(copy, ignore_errors=True)
    spark.stop()
    Path(args.out).write_text(json.dumps({
        "input": prepare_dir + "/reviews (split=train)", "rows": rows, "scan_s_runs": runs,
        "copy_s": copy_s, "seconds": common.median(runs),
        "total_s": round(time.perf_counter() - started, 3)}) + "\n")


# --------------------------------------------------------------------------- main
TIME_COLUMNS = ["size", "stage", "cell", "rc", "wall_s", "seconds", "rows_in", "rows_out",
                "rows_per_s", "peak_jvm_mib", "jvm_heap_peak_mib", "peak_python_mib",
                "peak_workers_mib", "output_mib"]
SPARK_COLUMNS = ["size", "stage", "cell", "tasks", "shuffle_read_mib", "shuffle_write_mib",
                 "spill_memory_mib", "spill_disk_mib", "time_skew", "time_skew_stage",
                 "rows_skew", "rows_skew_stage", "longest_task_s"]


def table(rows: list[dict], columns: list[str], title: str) -> None:
    """common.print_table with None as '-' and flags as yes/no."""
    def cell(value):
        return "-" if value is None else ("yes" if value else "no") if isinstance(value, bool) \
            else value
    common.print_table([{c: cell(r.get(c)) for c in columns} for r in rows], columns, title)


def report_extra(args, results, done: bool) -> dict:
    sizes = sorted({r["size"] for r in results})
    return {"complete": done, "sizes": sizes, "lr_max_iter": args.lr_max_iter,
            "samplers": args.samplers, "fit_samplers": args.fit_samplers,
            "features": args.features, "conf": ["conf/local.yaml", *args.conf],
            "overrides": args.overrides, "event_log_conf": EVENT_LOG_CONF,
            "targets": {"skew": TARGET_SKEW, "linearity": TARGET_LINEARITY,
                        "sample_over_scan": TARGET_SAMPLE_OVER_SCAN,
                        "min_tasks_for_skew": eventlog.MIN_SKEW_TASKS},
            "linearity": linearity(results), "sample_vs_scan": sample_vs_scan(results),
            "skew_at_largest": skew_at_largest(results),
            "disk_mib": {str(n): disk_mib(ROOT / str(n)) for n in sizes}}


def write(args, results, started, done: bool) -> dict:
    if done:
        return common.write_report(args, NAME, results, report_extra(args, results, True),
                                   started)
    with contextlib.redirect_stdout(io.StringIO()):     # partial report: no "wrote" line
        return common.write_report(args, NAME, results, report_extra(args, results, False),
                                   started)


def kept_rows(out: str, redo: set[tuple[int, str]]) -> list[dict]:
    """--merge: the rows of the report already at `out` for (size, step) pairs this run does
    not redo, so 1M, 3M and 9M can run in separate calls and still give linearity."""
    path = Path(out)
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text())["results"] if (r["size"], r["key"]) not in redo]


def parse(argv: list[str] | None):
    p = common.parser(NAME, __doc__)
    p.add_argument("--sizes", default=None,
                   help="comma-separated corpus rows (default 1000000,3000000,9002021; "
                        "quick 3000,6000)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (the others' outputs "
                        "must already be there)")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="sample.method of the sample runs")
    p.add_argument("--fit-samplers", default=None,
                   help="samplers whose output is encoded and fit (default: --samplers)")
    p.add_argument("--features", default=",".join(FEATURES),
                   help=f"encode cells, of {','.join(FEATURES)}")
    p.add_argument("--lr-max-iter", type=int, default=None,
                   help=f"cap lr.max_iter (default: the config's; quick {QUICK_LR_MAX_ITER})")
    p.add_argument("--conf", action="append", default=[], metavar="FILE",
                   help="extra YAML overlay after conf/local.yaml, for every stage")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="extra override for every stage (after the bench's own)")
    p.add_argument("--reuse", action="store_true",
                   help="no --force: a stage whose output is up to date is skipped (reused=true)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows already in --out for sizes and steps this run does not "
                        "redo (run the sizes in separate calls, report them together)")
    p.add_argument("--clean-after", action="store_true",
                   help="delete a size's stage outputs after it (logs, event logs, JSON kept)")
    p.add_argument("--scan", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scan:
        return args
    if args.repeats is None:
        args.repeats = 1                 # one run per stage and size: hours at 9M
    if args.repeats != 1:
        raise ValueError("bench/scale.py runs each stage once (--repeats 1)")
    args = common.finish_args(args, NAME)
    args.stages = [s for s in args.stages.split(",") if s]
    args.samplers = [s for s in args.samplers.split(",") if s]
    args.fit_samplers = ([s for s in args.fit_samplers.split(",") if s]
                         if args.fit_samplers is not None else list(args.samplers))
    args.features = [f for f in args.features.split(",") if f]
    for given, allowed, flag in ((args.stages, STAGES, "--stages"),
                                 (args.features, FEATURES, "--features")):
        bad = [x for x in given if x not in allowed]
        if bad:
            raise ValueError(f"{flag}: unknown {bad}; choose from {list(allowed)}")
    if args.quick and args.lr_max_iter is None:
        args.lr_max_iter = QUICK_LR_MAX_ITER
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse(argv)
    if args.scan:
        scan_main(args)
        return None
    started = common.machine()
    sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes
             else list(QUICK_SIZES if args.quick else SIZES))
    steps = plan(args.stages, args.samplers, args.fit_samplers, args.features, args.lr_max_iter)
    previous = (kept_rows(args.out, {(n, step.key) for n in sizes for step in steps})
                if args.merge else [])
    results: list[dict] = []

    def all_rows() -> list[dict]:
        # by size, then pipeline order (stable: cells keep their run order)
        return sorted(previous + results, key=lambda r: (r["size"], STAGES.index(r["stage"])))

    for rows in sizes:
        failed: set[str] = set()
        for step in steps:
            missing = [k for k in step.needs if k in failed]
            if missing:
                failed.add(step.key)
                results.append({"size": rows, "stage": step.stage, "cell": step.cell,
                                "key": step.key, "rc": None, "skipped": f"{missing[0]} failed"})
                print(f"  {rows} {step.key}: skipped ({missing[0]} failed)", flush=True)
                continue
            row = run_step(step, rows, args)
            results.append(row)
            if row["rc"] != 0:
                failed.add(step.key)
            print(f"  {rows} {step.key}: rc={row['rc']} wall {row['wall_s']:.1f} s"
                  + (f", stage {row['seconds']:.1f} s, {row.get('rows_per_s') or 0:,.0f} rows/s"
                     if row.get("seconds") is not None else "")
                  + (f", jvm {row['peak_jvm_mib']:,.0f} MiB" if row.get("peak_jvm_mib") else ""),
                  flush=True)
            write(args, all_rows(), started, done=False)
        if args.clean_after:
            for folder in OUTPUT_FOLDERS:
                shutil.rmtree(ROOT / str(rows) / folder, ignore_errors=True)
    report = write(args, all_rows(), started, done=True)
    print_tables(report)
    return report


def print_tables(report: dict) -> None:
    results = report["results"]
    table(results, TIME_COLUMNS, "scale: time, rows and memory per stage and size "
                                 "(seconds = the stage's own, wall_s = the process)")
    table(results, SPARK_COLUMNS, "scale: Spark event log per stage and size (skew = the worst "
                                  "Spark stage with >= 8 tasks)")
    lr_rows = [r for r in results if r["stage"] == "train-lr" and r.get("rc") == 0]
    if lr_rows:
        table(lr_rows, ["size", "cell", "rows_in", "iterations", "fit_seconds", "s_per_iter",
                        "score"], "train-lr (MLlib)")
    if report["linearity"]:
        table(report["linearity"],
              ["stage", "cell", "small", "large", "s_per_mrow_small", "s_per_mrow_large",
               "linearity", "linearity_per_iter", "jvm_peak_ratio", "jvm_heap_ratio",
               "meets_target"], f"linearity (target <= {TARGET_LINEARITY}; memory ratios: flat = 1)")
    if report["sample_vs_scan"]:
        table(report["sample_vs_scan"],
              ["size", "sampler", "sample_s", "scan_s", "copy_s", "sample_over_scan",
               "sample_over_copy", "meets_target"],
              f"sample vs a plain Parquet scan (target <= {TARGET_SAMPLE_OVER_SCAN}x)")
    print("\ndisk under out/bench/scale (MiB): "
          + ", ".join(f"{n}: {v:,.0f}" for n, v in report["disk_mib"].items() if v is not None))


if __name__ == "__main__":
    main(sys.argv[1:])
