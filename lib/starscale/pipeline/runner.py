"""Running stages: one stage (the CLI and spark-submit jobs) or the experiment's whole plan.

``run_stage`` imports starscale.stages.<module> by name (the STAGES registry), builds the session
when none is given, and runs the stage's run(spark, cfg, force). ``run_experiment`` runs every
step of pipeline.plan in one session: each stage skips when its manifest matches, a trained
model's results row is found by the run_id in its manifest (results.find_row), trained runs are
logged to MLflow (pipeline.tracking), and <run.output_dir>/experiment gets summary.txt and a
manifest: `steps` (per stage per cell: output, status ran|skipped, rows, seconds), `runs` (the
results rows of the grid), `verdict`, `report`.
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any

from starscale import console, layout, results, storage
from starscale.config import Config
from starscale.pipeline import plan as plan_
from starscale.pipeline.tracking import Tracker

# stage name → (module under starscale.stages, one-line description)
STAGES: dict[str, tuple[str, str]] = {
    "make-corpus": ("make_corpus", "generate a synthetic amazon_reviews_us TSV corpus"),
    "ingest": ("ingest", "raw TSV / JSON lines → reviews Parquet + quarantine + manifest"),
    "prepare": ("prepare", "clean text, dedupe, split train/validation/test, ladder ranks"),
    "sample": ("sample", "resample the train split (under/over/class weights/adasyn)"),
    "encode": ("encode", "vocabulary + token-id shards and TF-IDF features, fit on train"),
    "train-lr": ("train_lr", "logistic-regression baseline (MLlib or scikit-learn) on TF-IDF"),
    "train-lstm": ("train_lstm", "the LSTM with Horovod, each worker streaming its shard"),
    "evaluate": ("evaluate", "score a saved model on the test split, append a results row"),
    "experiment": ("experiment", "the whole grid: sizes × samplers × models, then the report"),
    "predict": ("predict", "batch-score reviews with a saved model inside Spark"),
    "report": ("report", "learning curves, sampling comparison, verdict → report/index.html + report.md"),
}
SUMMARY_FILE = "summary.txt"
TRAINERS = ("train-lr", "train-lstm")
RUN_KEYS = ("run_id", "series", "model", "engine", "tag", "sample_size", "sample_method", "score",
            "accuracy", "macro_f1")


def run_stage(stage: str, cfg: Config, force: bool | str = False, spark=None) -> dict:
    """Import the stage, build (or reuse) the session, run it and return its summary."""
    module = importlib.import_module(f"starscale.stages.{STAGES[stage][0]}")
    if spark is None:
        from starscale.spark import build_session
        # A stage may ask for session settings (the experiment: console progress); config wins.
        defaults = getattr(module, "SPARK_CONF_DEFAULTS", {})
        spark_cfg = dataclasses.replace(cfg.spark, conf={**defaults, **cfg.spark.conf})
        spark = build_session(spark_cfg, stage)
    started = time.time()
    summary = module.run(spark, cfg, force=force)
    return {"stage": stage, "wall_seconds": round(time.time() - started, 2), **summary}


def _run_step(spark, step: plan_.Step, force: bool) -> tuple[dict, dict | None]:
    summary = run_stage(step.stage, step.cfg, force=force, spark=spark)
    return summary, storage.read_manifest(spark, layout.stage_output(step.stage, step.cfg))


def _trained_row(spark, step: plan_.Step, results_dir: str, forced: bool):
    """Run a trainer step → (summary, manifest, its results row, status, note). A model
    published without its row (from before rows were written first) is retrained."""
    summary, manifest = _run_step(spark, step, forced)
    status = "skipped" if summary.get("skipped") else "ran"
    row = results.find_row(results_dir, (manifest or {}).get("run_id"))
    if status == "skipped" and row is None:
        summary, manifest = _run_step(spark, step, True)
        row = results.find_row(results_dir, (manifest or {}).get("run_id"))
        return summary, manifest, row, "ran", "results row was missing"
    return summary, manifest, row, status, None


def _run_steps(spark, cfg: Config, steps: list[plan_.Step], forced: set[str],
               tracker: Tracker | None) -> tuple[list[dict], list[dict], dict]:
    """Every step in order → (step records, results rows of the trained models, report manifest)."""
    results_dir = storage.qualify(layout.results_dir(cfg))
    records: list[dict] = []
    runs: list[dict] = []
    report_manifest: dict = {}
    for step in steps:
        if step.deferred:
            step = _resolved(step, cfg, runs)
        output = storage.qualify(layout.stage_output(step.stage, step.cfg))
        step_start = time.time()
        is_forced = step.stage in forced
        note = row = None
        try:
            with console.live(spark, f"{step.stage} {step.cell}".strip()):
                if step.stage in TRAINERS:
                    summary, manifest, row, status, note = _trained_row(spark, step, results_dir,
                                                                        is_forced)
                else:
                    summary, manifest = _run_step(spark, step, is_forced)
                    status = "skipped" if summary.get("skipped") else "ran"
        except Exception as exc:     # noqa: BLE001 — the CLI's one-line error names the stage
            console.tag_stage(exc, step.stage, step.cell)
            raise
        if row is not None:
            runs.append(row)
            if tracker is not None:
                tracker.log_run(row, output)
        if step.stage == "report":
            report_manifest = manifest or {}
        seconds = time.time() - step_start
        rows = plan_.stage_rows(step.stage, manifest)
        records.append({"stage": step.stage, "cell": step.cell, "output": output,
                        "status": status, "forced": is_forced, "rows": rows,
                        "seconds": round(seconds, 3), **({"note": note} if note else {})})
        print(plan_.progress_line(step.stage, step.cell, rows, seconds, status), flush=True)
    return records, runs, report_manifest


def _resolved(step: plan_.Step, cfg: Config, runs: list[dict]) -> plan_.Step:
    """A deferred LSTM step with the (learning rate, width) chosen on validation at
    experiment.tuning_size (the runs trained so far)."""
    size = plan_.tuning_size(cfg)
    choice = plan_.tuned_lstm(runs, size)
    if choice is None:
        raise ValueError(f"experiment.tuning_size {size}: no LSTM run with a validation score "
                         f"there to choose the learning rate and width from")
    resolved = plan_.resolve_lstm(step, cfg, choice)
    print(f"[experiment] LSTM setting chosen on validation at {size}: learning rate "
          f"{choice[0]:g} (per rank), {choice[1]} units → {resolved.cell}", flush=True)
    return resolved


def _run_replicates(spark, cfg: Config, runs: list[dict], forced: set[str],
                    tracker: Tracker | None) -> tuple[list[dict], list[dict], list[dict]]:
    """More seeds of the cells selected on validation at the largest size: up to
    plan.initial_seeds, then (experiment.seeds: auto) the top-up rule on their validation
    scores. Returns (step records, results rows, the seed plan)."""
    largest = plan_.grid_sizes(cfg.experiment.sizes, cfg.ladder.sizes)[-1]
    chosen = plan_.selected_cells(runs, largest)
    first = plan_.initial_seeds(cfg)
    extra = plan_.replicate_steps(cfg, chosen, 1, first)
    print(f"[experiment] selected on validation at {largest}: "
          f"{', '.join(c.label() for c in chosen) or 'none'}; {len(extra)} steps for seeds "
          f"2..{first}", flush=True)
    records, more_runs, _ = _run_steps(spark, cfg, extra, forced, tracker)
    plan = plan_.seed_top_up(cfg, chosen, runs + more_runs)
    for entry in plan:
        more = plan_.replicate_steps(cfg, [entry["cell"]], entry["runs"], entry["seeds"])
        print(f"[experiment] seed rule for {entry['label']}: {entry['runs']} seeds, validation "
              f"sd {entry['val_sd']:.4f} → k = {entry['seeds']} (h "
              f"{cfg.experiment.seed_half_width:g}, at most {cfg.experiment.max_seeds}); "
              f"{len(more)} more steps", flush=True)
        step_records, step_runs, _ = _run_steps(spark, cfg, more, forced, tracker)
        records += step_records
        more_runs += step_runs
    seed_plan = [{k: v for k, v in e.items() if k != "cell"} for e in plan]
    return records, more_runs, seed_plan


def run_experiment(spark, cfg: Config, force: bool | str = False) -> dict:
    """Run every step of the grid; publish <run.output_dir>/experiment; return {report, verdict,
    steps, runs, ...}."""
    steps = plan_.plan(cfg)
    forced = plan_.forced_stages(force)
    tracker = Tracker.create(cfg)
    started = time.time()
    print(f"[experiment] {len(steps)} steps (then the seed replicates of the cells selected "
          f"on validation); output {storage.qualify(cfg.run.output_dir)}"
          + (f"; forced: {', '.join(sorted(forced))}" if forced else ""), flush=True)
    grid, report_step = steps[:-1], steps[-1]
    records, runs, _ = _run_steps(spark, cfg, grid, forced, tracker)
    seed_plan: list[dict] = []
    if plan_.initial_seeds(cfg) > 1 or cfg.experiment.seeds == "auto":
        more, more_runs, seed_plan = _run_replicates(spark, cfg, runs, forced, tracker)
        records += more
        runs += more_runs
    last, _, report_manifest = _run_steps(spark, cfg, [report_step], forced, tracker)
    records += last
    for row in runs:
        row["series"] = plan_.run_label(row)
    # the report's files: in its version folder on object stores (storage.resolve)
    report_dir = storage.resolve(layout.report_dir(cfg), report_manifest)
    verdict = list(report_manifest.get("verdict") or [])
    if tracker is not None:
        tracker.log_report(report_dir, verdict)
    text = "\n".join([plan_.summary_table(runs), "",
                      *(verdict or ["No verdict: the grid has no size with both an LR and the "
                                    "LSTM."]), "", f"report: {report_dir}/index.html"])

    def write(staging: str) -> dict:
        storage.write_text(spark, layout.join(staging, SUMMARY_FILE), text + "\n")
        return {}

    base = {
        "stage": "experiment", "force": force, "forced": sorted(forced),
        "grid": _grid(cfg), "steps": records, "seed_plan": seed_plan,
        "counts": {"ran": sum(r["status"] == "ran" for r in records),
                   "skipped": sum(r["status"] == "skipped" for r in records)},
        "runs": [{k: r.get(k) for k in RUN_KEYS} for r in runs],
        "verdict": verdict, "report": f"{report_dir}/index.html",
        "report_md": f"{report_dir}/report.md",
        "tracking": tracker.describe() if tracker is not None else None,
        "wall_seconds": round(time.time() - started, 3),
        "config": cfg.to_dict(), "versions": storage.versions(),
    }
    manifest = storage.publish(spark, layout.experiment_dir(cfg), write, base)
    print("\n" + text, flush=True)      # last, so the output ends with the report's path
    return {k: manifest[k] for k in ("counts", "verdict", "report", "output", "runs", "steps",
                                     "tracking")}


def _grid(cfg: Config) -> dict[str, Any]:
    exp = cfg.experiment
    return {"sizes": plan_.grid_sizes(exp.sizes, cfg.ladder.sizes), "samplers": exp.samplers,
            "models": exp.models, "lr_engines": exp.lr_engines,
            "lr_features": [f.__dict__ for f in exp.lr_features], "seeds": exp.seeds,
            "lstm_settings": plan_.lstm_settings(cfg), "tuning_size": plan_.tuning_size(cfg)}
