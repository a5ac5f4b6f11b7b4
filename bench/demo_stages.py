"""Benchmark 7: `make demo` end to end, wall time per stage.

Runs the demo's stage chain the way the Makefile does — one `python -m starscale <stage>
--conf conf/local.yaml --conf conf/demo.yaml` process per stage (JVM start included) — with
`--force` and the output under out/bench/demo, and reads each stage's manifest for its own
`seconds` when the stage records one. A stage that fails is recorded (rc, last lines) and the
chain goes on only if later stages do not need it (they will fail and say so).

    python bench/demo_stages.py                     # make-corpus … encode, train-lr, train-lstm
    python bench/demo_stages.py --stages make-corpus,ingest,prepare,sample,encode
    python bench/demo_stages.py --quick             # 2k rows, first three stages
    python bench/demo_stages.py --experiment        # `make demo` as one experiment call
    python bench/demo_stages.py --read out/demo     # the same table from a run already made
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "demo_stages"
STAGES = ("make-corpus", "ingest", "prepare", "sample", "encode", "train-lr", "train-lstm")
QUICK_STAGES = ("make-corpus", "ingest", "prepare")


def stage_manifests(output_dir: Path):
    """(stage, seconds) of every published _MANIFEST.json under output_dir that records both."""
    for path in sorted(output_dir.rglob("_MANIFEST.json")):
        rel = path.relative_to(output_dir).parts
        # staging / old folders, and the copies MLflow keeps as run artifacts (every run's)
        if "._" in str(path) or (rel and rel[0] == "mlruns"):
            continue
        data = json.loads(path.read_text())
        if data.get("stage") and isinstance(data.get("seconds"), (int, float)):
            yield data["stage"], data["seconds"]


def manifest_seconds_by_stage(output_dir: Path) -> dict[str, float]:
    """{stage: seconds} from every _MANIFEST.json under output_dir (the time inside the stage's
    write, without process and JVM start); a stage published several times (cells) is summed."""
    out: dict[str, float] = {}
    for stage, seconds in stage_manifests(output_dir):
        out[stage] = round(out.get(stage, 0.0) + seconds, 3)
    return out


def experiment_steps_by_stage(output_dir: Path) -> dict[str, dict]:
    """{stage: {cells, step_seconds}} from the experiment's own manifest: how many of its steps
    ran per stage and the runner's seconds for them (the stage plus its skip check, session
    reuse and results bookkeeping; skipped steps are not counted). Without that manifest (a run
    stopped early): the published manifests per stage, step_seconds None."""
    path = output_dir / "experiment" / "_MANIFEST.json"
    out: dict[str, dict] = {}
    if not path.exists():      # stopped before its end: the cells its stages published
        for stage, _ in stage_manifests(output_dir):
            out.setdefault(stage, {"cells": 0, "step_seconds": None})["cells"] += 1
        return out
    for step in json.loads(path.read_text()).get("steps", []):
        if step.get("status") != "ran":
            continue
        row = out.setdefault(step["stage"], {"cells": 0, "step_seconds": 0.0})
        row["cells"] += 1
        row["step_seconds"] = round(row["step_seconds"] + float(step["seconds"]), 3)
    return out


def experiment_wall_seconds(output_dir: Path) -> float | None:
    """The experiment's wall_seconds (its whole grid in one session, without process and JVM
    start) from its manifest."""
    path = output_dir / "experiment" / "_MANIFEST.json"
    return json.loads(path.read_text()).get("wall_seconds") if path.exists() else None


def stage_rows(manifest_runs: list[dict], step_runs: list[dict]) -> list[dict]:
    """Per stage (in the experiment's order): cells that ran, the runner's step seconds and
    the manifests' seconds, each the median over the runs with every run's value."""
    order = ["make-corpus", "ingest", "prepare", "sample", "encode", "train-lr", "train-lstm",
             "report", "experiment"]
    stages = [s for s in order if any(s in r for r in manifest_runs + step_runs)]
    rows = []
    for stage in stages:
        seconds = [r[stage] for r in manifest_runs if stage in r]
        steps = [r[stage]["step_seconds"] for r in step_runs
                 if r.get(stage, {}).get("step_seconds") is not None]
        rows.append({"stage": stage,
                     "cells": step_runs[-1].get(stage, {}).get("cells") if step_runs else None,
                     "step_seconds": round(common.median(steps), 2) if steps else None,
                     "seconds": round(common.median(seconds), 2) if seconds else None,
                     "runs": [round(v, 2) for v in seconds],
                     "step_runs": [round(v, 2) for v in steps]})
    return rows


def demo_command(stage: str, output_dir: Path, extra: list[str]) -> list[str]:
    """`python -m starscale STAGE` as make demo runs it (local + demo overlays), --force, output
    under output_dir, each of extra as --set."""
    cmd = [sys.executable, "-m", "starscale", stage, "--conf", "conf/local.yaml",
           "--conf", "conf/demo.yaml", "--set", f"run.output_dir={output_dir}", "--force"]
    for item in extra:
        cmd += ["--set", item]
    return cmd


def run_chain(stages, output_dir: Path, extra: list[str]) -> list[dict]:
    rows = []
    for stage in stages:
        started = time.perf_counter()
        proc = subprocess.run(demo_command(stage, output_dir, extra), cwd=common.REPO,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        rows.append({"stage": stage, "seconds": seconds, "rc": proc.returncode,
                     "manifest_seconds": manifest_seconds_by_stage(output_dir).get(stage),
                     "tail": "" if proc.returncode == 0 else (proc.stderr or proc.stdout)[-1500:]})
        print(f"  {stage}: {seconds:.1f} s rc={proc.returncode}", flush=True)
    return rows


def run_experiment(args, output_dir: Path, extra: list[str], started: dict) -> dict:
    """`make demo` = `python -m starscale experiment --conf conf/local.yaml --conf conf/demo.yaml`:
    wall time per run and, from each run's manifests, seconds per stage (summed over the
    experiment's cells); medians over the runs."""
    cmd = demo_command("experiment", output_dir, extra)
    walls, per_run, per_run_steps = [], [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"experiment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        per_run.append(manifest_seconds_by_stage(output_dir))     # --force: this run's stages
        per_run_steps.append(experiment_steps_by_stage(output_dir))
        print(f"  experiment run {i + 1}: {walls[-1]:.1f} s", flush=True)
    results = stage_rows(per_run, per_run_steps)
    results.append({"stage": "experiment (wall)", "seconds": round(common.median(walls), 2),
                    "runs": [round(w, 2) for w in walls]})
    common.print_table(results, ["stage", "cells", "step_seconds", "seconds", "runs"],
                       f"make demo (experiment), wall median of {args.repeats}")
    return common.write_report(args, NAME, results, {"mode": "experiment", "overrides": extra},
                               started)


def read_experiment(args, output_dir: Path, started: dict) -> dict:
    """The same table from an experiment already run into output_dir (no run): e.g. a
    `make demo` timed with `time`, or one stopped early (its manifests so far, without the
    experiment's own)."""
    if not output_dir.is_dir():
        raise ValueError(f"--read: {output_dir} is not a folder")
    results = stage_rows([manifest_seconds_by_stage(output_dir)],
                         [experiment_steps_by_stage(output_dir)])
    wall = experiment_wall_seconds(output_dir)
    if wall is not None:
        results.append({"stage": "experiment (in-process wall)", "seconds": round(wall, 2),
                        "runs": [round(wall, 2)]})
    common.print_table(results, ["stage", "cells", "step_seconds", "seconds"],
                       f"experiment in {output_dir}")
    return common.write_report(args, NAME, results, {"mode": "read", "run": str(output_dir)},
                               started)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--stages", default=None, help="comma-separated stages (default: the demo chain)")
    args.add_argument("--experiment", action="store_true",
                      help="time `make demo` as it now is: one `python -m starscale experiment` "
                           "call; per-stage seconds from the manifests it leaves")
    args.add_argument("--read", default=None, metavar="DIR",
                      help="run nothing: the --experiment table from the run in DIR "
                           "(its run.output_dir)")
    args.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                      help="extra config overrides for every stage (default for the bench: "
                           "lstm.epochs=1 lstm.min_steps=0)")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    stages = args.stages.split(",") if args.stages else (QUICK_STAGES if args.quick else STAGES)
    extra = list(args.overrides) or ["lstm.epochs=1", "lstm.min_steps=0"]
    if args.quick:
        extra += ["corpus.rows=2000"]
    output_dir = common.WORK / ("demo_quick" if args.quick else "demo")
    if args.read:
        return read_experiment(args, Path(args.read), started)
    if args.experiment:
        return run_experiment(args, output_dir.with_name(output_dir.name + "_experiment"),
                              list(args.overrides), started)
    chains = [run_chain(stages, output_dir, extra) for _ in range(args.repeats)]
    results = []
    for i, stage in enumerate(stages):
        runs = [c[i] for c in chains]
        ok = [r["seconds"] for r in runs if r["rc"] == 0]
        results.append({"stage": stage, "seconds": round(common.median(ok), 2) if ok else None,
                        "ok_runs": len(ok), "runs": [round(r["seconds"], 2) for r in runs],
                        "rc": [r["rc"] for r in runs],
                        "manifest_seconds": runs[-1]["manifest_seconds"],
                        "error_tail": next((r["tail"] for r in runs if r["rc"]), "")})
    total = sum(r["seconds"] for r in results if r["seconds"])
    common.print_table(results, ["stage", "seconds", "ok_runs", "rc", "manifest_seconds"],
                       f"make demo stage chain, median of {args.repeats}")
    print(f"total of the stages that ran: {total:.1f} s")
    return common.write_report(args, NAME, results,
                               {"total_seconds": round(total, 2), "overrides": extra}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
