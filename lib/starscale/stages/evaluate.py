"""evaluate: re-score a saved model on the test split and append a results row.

Input: a saved model (evaluate.model = lr | lstm; evaluate.model_dir, or by default
models/lr_<lr.engine>/<tag> or models/lstm/<tag>) and encode/<tag> (features/ for LR,
sequences/ for the LSTM). Output: <run.output_dir>/evaluate/<model>_<tag>/metrics.json + manifest,
a row in results/results.parquet and the predictions under results/predictions/<run_id>.parquet.

Also home of the helpers train-lr and predict share: model locations, LR model loading and
scoring, the results row.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import time
import uuid
from typing import Any, Callable

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from starscale import lr, metrics, results, storage
from starscale.config import Config
from starscale.tables import SEQUENCES_SCHEMA

MLLIB_MODEL = "model"                    # MLlib LogisticRegressionModel folder
SKLEARN_MODEL = "sklearn_model.json"     # scikit-learn coefficients (lr.sklearn_to_dict)
LSTM_MODEL_FILE = "model.keras"



# --------------------------------------------------------------------------- shared helpers
def default_model_dir(cfg: Config, kind: str) -> str:
    """models/lr_<lr.engine>/<encode tag> (the LR depends on the TF-IDF setting) or
    models/lstm/<sample tag>."""
    if kind == "lr":
        return os.path.join(cfg.stage_dir("models"), f"lr_{cfg.lr.engine}", cfg.encode_tag())
    return os.path.join(cfg.stage_dir("models"), "lstm", cfg.sample_tag())


def new_run_id(model: str, tag: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{model}_{tag}_{stamp}_{uuid.uuid4().hex[:6]}"


def result_row(cfg: Config, *, model: str, engine: str | None, stage: str, run_id: str,
               model_dir: str, summary: dict, ci: dict | None, extra: dict[str, Any],
               sections: tuple[str, ...]) -> dict[str, Any]:
    """One flat results row: identity, sample cell, hyperparameters (section.key), metrics."""
    row: dict[str, Any] = {
        "run_id": run_id, "model": model, "engine": engine,
        "tag": cfg.encode_tag() if model.startswith("lr") else cfg.sample_tag(),
        # text: ladder sizes are ints or 'full'; one type keeps the column stable
        "sample_size": str(cfg.sample.size), "sample_method": cfg.sample.method,
        "stage": stage, "model_dir": storage.qualify(model_dir), "run_name": cfg.run.name,
        "bootstrap": cfg.evaluate.bootstrap, "bootstrap_seed": cfg.evaluate.seed,
    }
    row.update(metrics.metric_columns(summary, ci))
    for name in sections:
        row.update(results.flatten(dataclasses.asdict(getattr(cfg, name)), name))
    row.update(extra)
    return row


def find_lstm_file(model_dir: str) -> str:
    """The model.keras inside a local LSTM model folder (at the top or one level down)."""
    local = storage.local_path(model_dir)
    if local is None:
        raise ValueError(f"{model_dir}: LSTM models are loaded from a local path; copy it locally")
    if os.path.isfile(local):
        return local
    top = os.path.join(local, LSTM_MODEL_FILE)
    if os.path.isfile(top):
        return top
    below = sorted(os.path.join(local, d, LSTM_MODEL_FILE) for d in os.listdir(local)
                   if os.path.isfile(os.path.join(local, d, LSTM_MODEL_FILE))) \
        if os.path.isdir(local) else []
    if not below:
        raise ValueError(f"{model_dir}: no {LSTM_MODEL_FILE} here or one folder down")
    return below[0]


def load_lr_scorer(spark, model_dir: str) -> tuple[str, dict, Callable[[DataFrame], DataFrame]]:
    """A saved LR model → (engine, its manifest, score(features) → review_id, label, pred, proba)."""
    manifest = storage.require_manifest(spark, model_dir, "train-lr")
    engine = manifest.get("engine")
    root = storage.qualify(model_dir)
    if engine == "mllib":
        from pyspark.ml.classification import LogisticRegressionModel
        model = LogisticRegressionModel.load(root + "/" + MLLIB_MODEL)
        return engine, manifest, lambda features: lr.predict_mllib(model, features)
    if engine == "sklearn":
        data = json.loads(storage.read_text(spark, root + "/" + SKLEARN_MODEL))
        coef, intercept = np.asarray(data["coef"]), np.asarray(data["intercept"])
        return engine, manifest, lambda features: lr.predict_linear(features, coef, intercept,
                                                                    data["classes"])
    raise ValueError(f"{model_dir}/{storage.MANIFEST}: engine {engine!r} is not an LR model "
                     f"(expected mllib or sklearn)")


def lstm_predict(model, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, 5) class probabilities of token-id rows (n, max_len)."""
    if len(ids) == 0:
        return np.zeros((0, metrics.N_CLASSES))
    return np.asarray(model.predict(ids, batch_size=batch_size, verbose=0), dtype=np.float64)


def _load_lstm(path: str):
    try:
        from starscale.lstm import load_model
    except ImportError as exc:    # lstm.py is another engineer's module
        raise NotImplementedError("evaluating an LSTM needs starscale.lstm.load_model") from exc
    return load_model(path, compile=False)


# --------------------------------------------------------------------------- stage
def run(spark, cfg: Config, force: bool = False) -> dict:
    """Score the saved model on encode/<tag>'s test split; publish metrics; append a results row."""
    kind = cfg.evaluate.model
    tag = cfg.sample_tag()
    model_dir = cfg.evaluate.model_dir or default_model_dir(cfg, kind)
    encode_dir = cfg.encode_dir()
    producer = "train-lr" if kind == "lr" else "train-lstm"
    model_manifest = storage.require_manifest(spark, model_dir, producer)
    if kind == "lr":
        name = f"lr_{model_manifest.get('engine')}"
        # the test features must come from the encode run whose TF-IDF the model was fit on
        encode_dir = model_manifest.get("encode_dir") or encode_dir
    else:
        name = "lstm"
    output = os.path.join(cfg.stage_dir("evaluate"), f"{name}_{tag}")
    outcome: dict = {}

    def write(staging: str) -> dict:
        started = time.time()
        if kind == "lr":
            from starscale.stages.train_lr import read_features
            engine, _, score = load_lr_scorer(spark, model_dir)
            test_ids, y_true, y_pred, proba = lr.collect_predictions(
                score(read_features(spark, encode_dir, "test")))
        else:
            engine = None
            model = _load_lstm(find_lstm_file(model_dir))
            test = (spark.read.schema(SEQUENCES_SCHEMA).parquet(encode_dir + "/sequences")
                    .where(F.col("split") == "test").select("review_id", "label", "ids")
                    .toPandas().sort_values("review_id", kind="stable"))
            ids = (np.stack(test["ids"].to_numpy()).astype(np.int32) if len(test)
                   else np.zeros((0, 1), np.int32))
            proba = lstm_predict(model, ids, cfg.lstm.batch_size)
            test_ids = test["review_id"].to_numpy(dtype=object)
            y_true = test["label"].to_numpy().astype(np.int64)
            y_pred = np.argmax(proba, axis=1).astype(np.int64)
        if y_true is None or len(y_true) == 0:
            raise ValueError(f"{encode_dir}: the test split is empty or has null labels")
        predict_seconds = time.time() - started
        summary = metrics.summary(y_true, y_pred)
        ci = (metrics.bootstrap_ci(y_true, y_pred, cfg.evaluate.bootstrap, cfg.evaluate.seed)
              if cfg.evaluate.bootstrap else None)
        storage.write_text(spark, staging + "/metrics.json",
                           json.dumps({"summary": summary, "ci": ci}, indent=2))
        run_id = new_run_id(name, tag)
        outcome.update(test_ids=test_ids, y_true=y_true, y_pred=y_pred, proba=proba,
                       summary=summary, ci=ci, engine=engine, run_id=run_id,
                       predict_seconds=predict_seconds)
        return {"run_id": run_id, "model_kind": kind, "engine": engine, "tag": tag,
                "model_dir": storage.qualify(model_dir), "encode_dir": storage.qualify(encode_dir),
                "test_rows": int(len(y_true)), "score": summary["score"],
                "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"], "ci": ci,
                "predict_seconds": round(predict_seconds, 3)}

    manifest = storage.run_stage(
        spark, stage="evaluate", output=output, config_hash=cfg.section_hash("evaluate"),
        config=cfg.to_dict(), upstream={model_dir: producer, encode_dir: "encode"},
        force=force, write=write)
    keys = ("run_id", "model_kind", "engine", "tag", "test_rows", "score", "accuracy",
            "macro_f1", "ci", "output")
    if manifest.get("skipped"):
        return {**{k: manifest.get(k) for k in keys}, "skipped": True}
    results_dir = cfg.stage_dir("results")
    results.save_predictions(results_dir, outcome["run_id"], outcome["test_ids"],
                             outcome["y_true"], outcome["y_pred"], outcome["proba"])
    row = result_row(cfg, model=kind, engine=outcome["engine"], stage="evaluate",
                     run_id=outcome["run_id"], model_dir=model_dir, summary=outcome["summary"],
                     ci=outcome["ci"],
                     extra={"predict_seconds": round(outcome["predict_seconds"], 3),
                            "stage_seconds": manifest.get("seconds"),
                            "trained_run_id": model_manifest.get("run_id")},
                     sections=())
    results.append_result(results_dir, row)
    return {**{k: manifest.get(k) for k in keys}, "per_class": outcome["summary"]["per_class"],
            "skipped": False}
