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


def manifest_seconds_by_stage(output_dir: Path) -> dict[str, float]:
    """{stage: seconds} from every _MANIFEST.json under output_dir (the time inside the stage's
    write, without process and JVM start); a stage published several times (cells) is summed."""
    out: dict[str, float] = {}
    for path in sorted(output_dir.rglob("_MANIFEST.json")):
        rel = path.relative_to(output_dir).parts
        # staging / old folders, and the copies MLflow keeps as run artifacts (every run's)
        if "._" in str(path) or (rel and rel[0] == "mlruns"):
            continue
        data = json.loads(path.read_text())
        if data.get("stage") and isinstance(data.get("seconds"), (int, float)):
            out[data["stage"]] = round(out.get(data["stage"], 0.0) + data["seconds"], 3)
    return out


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
    walls, per_run = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"experiment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        per_run.append(manifest_seconds_by_stage(output_dir))     # --force: this run's stages
        print(f"  experiment run {i + 1}: {walls[-1]:.1f} s", flush=True)
    results = []
    for stage in per_run[-1]:
        runs = [r[stage] for r in per_run if stage in r]
        results.append({"stage": stage, "seconds": round(common.median(runs), 2),
                        "runs": [round(v, 2) for v in runs]})
    results.append({"stage": "experiment (wall)", "seconds": round(common.median(walls), 2),
                    "runs": [round(w, 2) for w in walls]})
    common.print_table(results, ["stage", "seconds", "runs"],
                       f"make demo (experiment), wall median of {args.repeats}")
    return common.write_report(args, NAME, results, {"mode": "experiment", "overrides": extra},
                               started)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--stages", default=None, help="comma-separated stages (default: the demo chain)")
    args.add_argument("--experiment", action="store_true",
                      help="time `make demo` as it now is: one `python -m starscale experiment` "
                           "call; per-stage seconds from the manifests it leaves")
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
