"""experiment: the whole grid in one SparkSession, then the report.

make-corpus (only when ingest.inputs is empty) → ingest → prepare → per size of
experiment.sizes (null: ladder.sizes) per sampler: sample → per experiment.lr_features setting:
encode → LR per engine → the LSTM on the first setting's encode → report
(starscale.experiment.plan). Every stage goes through its own run(), which skips when the
published manifest matches its config and inputs: adding a size or a sampler computes only the
new cells, and a killed experiment resumes where it stopped. force: False, True (bare --force:
every stage) or a stage name (that stage for every cell; the stages after it rerun because their
input fingerprints change).

Output: every stage's folder under <run.output_dir>, and <run.output_dir>/experiment with
summary.txt and _MANIFEST.json: `steps` (per stage per cell: output, status ran|skipped, rows,
seconds), `runs` (the results rows of the grid), `verdict`, `report`. Trained runs are logged
to MLflow (tracking.*) from the results rows, here on the driver, never from a Horovod rank.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from typing import Any

from starscale import experiment, results, storage
from starscale.config import Config
from starscale.stages import evaluate as evaluate_stage

# Spark's console progress bar for the data stages; spark-defaults or the config may say otherwise.
SPARK_CONF_DEFAULTS = {"spark.ui.showConsoleProgress": "true"}
SUMMARY_FILE = "summary.txt"


def step_output(step: experiment.Step) -> str:
    """The folder a step publishes (qualified)."""
    cfg = step.cfg
    folder = {
        "make-corpus": lambda: cfg.stage_dir("corpus"),
        "ingest": lambda: cfg.stage_dir("ingest"),
        "prepare": lambda: cfg.stage_dir("prepare"),
        "sample": lambda: os.path.join(cfg.stage_dir("sample"), cfg.sample_tag()),
        "encode": cfg.encode_dir,
        "train-lr": lambda: evaluate_stage.default_model_dir(cfg, "lr"),
        "train-lstm": lambda: evaluate_stage.default_model_dir(cfg, "lstm"),
        "report": lambda: cfg.stage_dir("report"),
    }[step.stage]()
    return storage.qualify(folder)


def _model_rows(results_dir: str, output: str) -> list[dict]:
    """Results rows of the model published at output (LR: model_dir, LSTM: model_path),
    oldest first."""
    table = results.read_results(results_dir)
    if table.empty:
        return []
    match = None
    for column in ("model_dir", "model_path"):
        if column in table.columns:
            hit = table[column].astype("string") == output
            match = hit if match is None else (match | hit)
    if match is None:
        return []
    rows = table[match.fillna(False)].sort_values("created_utc", kind="stable")
    return [{k: _plain(v) for k, v in row.items()} for row in rows.to_dict("records")]


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _row_of_model(results_dir: str, output: str, manifest: dict | None) -> dict | None:
    """The results row written for the model now published at output, or None when missing
    (a run killed between publishing the model and appending its row)."""
    if not manifest:
        return None
    rows = _model_rows(results_dir, output)
    if manifest.get("run_id"):          # train-lr records the row's run_id in its manifest
        rows = [r for r in rows if r.get("run_id") == manifest["run_id"]]
    else:                               # train-lstm: a row appended after the model's publish
        published = str(manifest.get("created_utc") or "")
        rows = [r for r in rows if str(r.get("created_utc") or "") >= published]
    return rows[-1] if rows else None


def _run_step(spark, step: experiment.Step, force: bool) -> tuple[dict, dict | None]:
    """Run one step (via the CLI's runner: same import and timing as a single-stage command)."""
    from starscale.cli import run_stage
    summary = run_stage(step.stage, step.cfg, force=force, spark=spark)
    return summary, storage.read_manifest(spark, step_output(step))


def run(spark, cfg: Config, force: bool | str = False) -> dict:
    """Run every step of the grid; return {report, verdict, steps, runs, ...}."""
    steps = experiment.plan(cfg)
    forced = experiment.forced_stages(force)
    tracker = Tracker.create(cfg)
    results_dir = storage.qualify(cfg.stage_dir("results"))
    records: list[dict] = []
    runs: list[dict] = []              # results rows of the grid's models, in run order
    report_manifest: dict = {}
    started = time.time()
    print(f"[experiment] {len(steps)} steps; output {storage.qualify(cfg.run.output_dir)}"
          + (f"; forced: {', '.join(sorted(forced))}" if forced else ""), flush=True)
    for step in steps:
        output = step_output(step)
        step_start = time.time()
        summary, manifest = _run_step(spark, step, step.stage in forced)
        status = "skipped" if summary.get("skipped") else "ran"
        note = None
        if step.stage in ("train-lr", "train-lstm"):
            row = _row_of_model(results_dir, output, manifest)
            if status == "skipped" and row is None:
                # The model was published but its results row never appended (killed in
                # between): retrain so that the table and the model agree.
                summary, manifest = _run_step(spark, step, True)
                status, note = "ran", "results row was missing"
                row = _row_of_model(results_dir, output, manifest)
            if row is not None:
                runs.append(row)
                if tracker is not None:
                    tracker.log_run(row, output)
        if step.stage == "report":
            report_manifest = manifest or {}
        seconds = time.time() - step_start
        rows = experiment.stage_rows(step.stage, manifest)
        records.append({"stage": step.stage, "cell": step.cell, "output": output,
                        "status": status, "forced": step.stage in forced, "rows": rows,
                        "seconds": round(seconds, 3), **({"note": note} if note else {})})
        print(experiment.progress_line(step.stage, step.cell, rows, seconds, status), flush=True)

    for row in runs:
        row["series"] = experiment.run_label(row)
    report_dir = step_output(steps[-1])
    verdict = list(report_manifest.get("verdict") or [])
    table = experiment.summary_table(runs)
    if tracker is not None:
        tracker.log_report(report_dir, verdict)
    text = "\n".join([table, "", *(verdict or ["No verdict: the grid has no size with both "
                                               "an LR and the LSTM."]),
                      "", f"report: {report_dir}/index.html"])

    def write(staging: str) -> dict:
        storage.write_text(spark, f"{staging}/{SUMMARY_FILE}", text + "\n")
        return {}

    base = {
        "stage": "experiment", "force": force, "forced": sorted(forced),
        "grid": {"sizes": experiment.grid_sizes(cfg.experiment.sizes, cfg.ladder.sizes),
                 "samplers": cfg.experiment.samplers, "models": cfg.experiment.models,
                 "lr_engines": cfg.experiment.lr_engines,
                 "lr_features": [f.__dict__ for f in cfg.experiment.lr_features]},
        "steps": records,
        "counts": {"ran": sum(r["status"] == "ran" for r in records),
                   "skipped": sum(r["status"] == "skipped" for r in records)},
        "runs": [{k: r.get(k) for k in ("run_id", "series", "model", "engine", "tag",
                                        "sample_size", "sample_method", "score", "accuracy",
                                        "macro_f1")} for r in runs],
        "verdict": verdict, "report": f"{report_dir}/index.html",
        "report_md": f"{report_dir}/report.md",
        "tracking": tracker.describe() if tracker is not None else None,
        "wall_seconds": round(time.time() - started, 3),
        "config": cfg.to_dict(), "versions": storage.versions(),
    }
    manifest = storage.publish(spark, cfg.stage_dir("experiment"), write, base)
    print("\n" + text, flush=True)      # last, so the output ends with the report's path
    return {k: manifest[k] for k in ("counts", "verdict", "report", "output", "runs", "steps",
                                     "tracking")}


# --------------------------------------------------------------------------- MLflow
class Tracker:
    """Logs results rows as MLflow runs: params, metrics, the model folder and the report.

    Idempotent: a row whose run_id already has an MLflow run (tag starscale.run_id) is not
    logged again, so a resumed or repeated experiment logs each trained model once.
    """

    def __init__(self, client, experiment_id: str, uri: str):
        self.client, self.experiment_id, self.uri = client, experiment_id, uri
        self.logged: dict[str, str] = {}      # starscale run_id → MLflow run id (this process)
        self.known = self._known_run_ids()

    @classmethod
    def create(cls, cfg: Config) -> "Tracker | None":
        tcfg = cfg.tracking
        if not tcfg.enabled:
            return None
        uri = tcfg.mlflow_uri
        if uri is None:
            local = storage.local_path(cfg.run.output_dir)
            if local is None:
                print("[experiment] tracking: run.output_dir is not local and tracking.mlflow_uri "
                      "is null: MLflow logging off", file=sys.stderr, flush=True)
                return None
            uri = "file:" + os.path.join(os.path.abspath(local), "mlruns")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ValueError("tracking.enabled is true but mlflow is not installed: pip install "
                             "mlflow-skinny (requirements/common.txt) or set "
                             "tracking.enabled=false") from None
        client = MlflowClient(tracking_uri=uri)
        name = tcfg.experiment_name or cfg.run.name
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        return cls(client, experiment_id, uri)

    def _known_run_ids(self) -> set[str]:
        known, token = set(), None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            known.update(r.data.tags.get("starscale.run_id") for r in page)
            token = page.token
            if not token:
                return known - {None}

    def describe(self) -> dict:
        return {"mlflow_uri": self.uri, "experiment_id": self.experiment_id,
                "logged": dict(self.logged)}

    def log_run(self, row: dict, model_output: str) -> None:
        from mlflow.entities import Metric, Param, RunTag
        run_id = str(row.get("run_id"))
        if run_id in self.known:
            return
        run = self.client.create_run(self.experiment_id, run_name=run_id, tags={
            "starscale.run_id": run_id, "starscale.model_dir": model_output,
            "starscale.series": experiment.run_label(row)})
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in sorted(experiment.mlflow_params(row).items())]
        metrics = [Metric(k, v, now, 0) for k, v in sorted(experiment.mlflow_metrics(row).items())]
        for i in range(0, len(params), 100):       # MLflow's batch limit is 100 params
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 500):
            self.client.log_batch(run.info.run_id, metrics=metrics[i:i + 500])
        self.client.log_batch(run.info.run_id,
                              tags=[RunTag("created_utc", str(row.get("created_utc")))])
        local = storage.local_path(model_output)
        if local and os.path.isdir(local):
            self.client.log_artifacts(run.info.run_id, local, "model")
        self.client.set_terminated(run.info.run_id)
        self.logged[run_id] = run.info.run_id
        self.known.add(run_id)

    def log_report(self, report_dir: str, verdict: list[str]) -> None:
        """The report folder and verdict on every run logged by this experiment."""
        local = storage.local_path(report_dir)
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for mlflow_id in self.logged.values():
            if local and os.path.isdir(local):
                self.client.log_artifacts(mlflow_id, local, "report")
            self.client.set_tag(mlflow_id, "starscale.verdict", json.dumps(verdict)[:5000])
            self.client.set_tag(mlflow_id, "starscale.report_utc", stamp)
