"""MLflow tracking of the experiment's trained runs, on the driver (never from a Horovod rank).

A results row (results.ResultRow's columns) becomes one MLflow run: identity and dotted
'section.key' columns as params, metric and effort columns as metrics, the model folder and the
report as artifacts. ``Tracker`` is idempotent across reruns (tag starscale.run_id).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from typing import Any, Mapping

from starscale import layout, storage
from starscale.config import Config
from starscale.pipeline.plan import present, run_label

METRIC_PREFIXES = ("score", "accuracy", "macro_f1", "precision_", "recall_", "f1_", "support_")
EFFORT_KEYS = ("train_rows", "rows_seen", "iterations", "epochs_run", "fit_seconds",
               "predict_seconds", "eval_seconds", "stage_seconds", "samples_per_s", "n_test")
IDENTITY_KEYS = ("model", "engine", "tag", "sample_size", "sample_method", "stage")
MAX_PARAM_CHARS = 500      # MLflow limits a param value's length; long JSON is cut


def mlflow_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metric and effort columns of a results row (nulls dropped)."""
    out = {}
    for key, value in row.items():
        if not (key.startswith(METRIC_PREFIXES) or key in EFFORT_KEYS):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def mlflow_params(row: Mapping[str, Any]) -> dict[str, str]:
    """Identity and hyperparameter columns (dotted 'section.key' names) of a results row."""
    out = {}
    for key, value in row.items():
        if (key in IDENTITY_KEYS or "." in key) and present(value):
            out[key] = str(value)[:MAX_PARAM_CHARS]
    return out
def epoch_metrics(manifest: Mapping[str, Any] | None) -> list[tuple[str, int, float]]:
    """(name, epoch, value) of a trained LSTM's per-epoch history (its model manifest's
    'history': loss, val_loss, ... per epoch) as MLflow steps, named 'epoch.<key>' so they never
    mix with the test metrics; non-finite values dropped."""
    out = []
    for key, values in sorted(((manifest or {}).get("history") or {}).items()):
        for epoch, value in enumerate(values or []):
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                out.append((f"epoch.{key}", epoch, float(value)))
    return out


def _model_manifest(model_output: str) -> dict | None:
    try:
        return storage.read_manifest_local(model_output)
    except (ValueError, OSError):
        return None


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
            uri = "file:" + layout.mlflow_dir(local)
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
            "starscale.series": run_label(row)})
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in sorted(mlflow_params(row).items())]
        metrics = [Metric(k, v, now, 0) for k, v in sorted(mlflow_metrics(row).items())]
        metrics += [Metric(k, v, now, step) for k, step, v in epoch_metrics(
            _model_manifest(model_output))]
        for i in range(0, len(params), 100):       # MLflow's batch limit is 100 params
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 500):
            self.client.log_batch(run.info.run_id, metrics=metrics[i:i + 500])
        self.client.log_batch(run.info.run_id,
                              tags=[RunTag("created_utc", str(row.get("created_utc")))])
        local = storage.local_path(model_output)
        if local and os.path.isdir(local):
            files = storage.local_path(storage.data_dir(None, local))   # its version folder
            self.client.log_artifacts(run.info.run_id, files, "model")
            if files != local:                      # and the manifest, beside it there
                self.client.log_artifact(run.info.run_id,
                                         os.path.join(local, storage.MANIFEST), "model")
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
