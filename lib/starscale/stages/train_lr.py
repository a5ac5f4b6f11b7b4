"""train-lr: the logistic-regression baseline (Spark MLlib or scikit-learn) on the TF-IDF features.

Input: <run.output_dir>/encode/<tag>/features (split=train|validation|test; train already
resampled). Output: <run.output_dir>/models/lr_<lr.engine>/<tag>/ holding the model
(``model/`` for MLlib, ``sklearn_model.json`` for scikit-learn), ``metrics.json`` and the
manifest; one row appended to results/results.parquet and the test predictions saved under
results/predictions/<run_id>.parquet.

Weights: every row is fit with weight × (balanced class weight when lr.class_weight=balanced and
the sampler did not already put it in the weight column, i.e. sample.method != class_weight).
With sample.method=adasyn the train features are collected to the driver and resampled with
starscale.resample.adasyn_resample first (synthetic rows weigh 1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from starscale import lr, metrics, results, storage
from starscale.config import Config
from starscale.tables import FEATURES_SCHEMA
from starscale.stages import evaluate as evaluate_stage



def read_features(spark, encode_dir: str, split: str) -> DataFrame:
    """One split of encode/<tag>/features: review_id, label, weight, features."""
    return (spark.read.schema(FEATURES_SCHEMA).parquet(encode_dir + "/features")
            .where(F.col("split") == split)
            .select("review_id", "label", "weight", "features"))


def _strategy_by_label(strategy):
    """sample.strategy keyed by star → keyed by label (star − 1); named strategies unchanged."""
    if isinstance(strategy, dict):
        return {int(star) - 1: int(n) for star, n in strategy.items()}
    return strategy


def _adasyn(cfg: Config, train: DataFrame):
    """Collect train features, ADASYN them on the driver → (ids, X, y, w) with synthetic rows."""
    try:
        from starscale.resample import adasyn_resample
    except ImportError as exc:   # resample.py is another engineer's module
        raise NotImplementedError("sample.method=adasyn needs starscale.resample.adasyn_resample, "
                                  "which is not available") from exc
    ids, X, y, w = lr.collect_features(train, cfg.sample.adasyn_max_rows, key="sample.adasyn_max_rows")
    X_res, y_res = adasyn_resample(X, y, cfg.sample.seed, _strategy_by_label(cfg.sample.strategy),
                                   cfg.sample.adasyn_max_rows)
    n_new = X_res.shape[0] - X.shape[0]
    w_res = np.concatenate([w, np.ones(n_new)])
    ids_res = np.concatenate([ids, np.asarray([f"adasyn-{i}" for i in range(n_new)], dtype=object)])
    return ids_res, X_res, np.asarray(y_res, dtype=np.int64), w_res, n_new


def _class_weights(cfg: Config, label_counts: dict[int, int]) -> dict[int, float] | None:
    from starscale.resample import balanced_class_weights
    if cfg.lr.class_weight == "none" or cfg.sample.method == "class_weight":
        return None   # class_weight sampling already wrote the balanced weight per row
    return balanced_class_weights(label_counts)


def fit_and_score(spark, cfg: Config, train: DataFrame, test: DataFrame) -> dict:
    """Fit the configured engine on train, score test. Returns the fitted model and its numbers."""
    engine = cfg.lr.engine
    started = time.time()
    info: dict = {"engine": engine}
    if cfg.sample.method == "adasyn":
        ids, X, y, w, n_new = _adasyn(cfg, train)
        info["adasyn_rows_added"] = int(n_new)
    if engine == "mllib":
        if cfg.sample.method == "adasyn":
            train = lr.sparse_rows_frame(spark, X, y, w, ids)
        label_counts = {int(r["label"]): int(r["count"])
                        for r in train.groupBy("label").count().collect()}
        weighted = lr.with_fit_weight(train, _class_weights(cfg, label_counts)).persist()
        try:
            total_weight = weighted.agg(F.sum(lr.FIT_WEIGHT)).first()[0]
            reg_param = (cfg.lr.reg_param if cfg.lr.reg_param is not None
                         else lr.mllib_reg_for_C(cfg.lr.C, total_weight))
            info["reg_param_effective"] = reg_param
            fit_start = time.time()
            model = lr.fit_mllib(weighted, reg_param, cfg.lr.elastic_net, cfg.lr.max_iter)
            info["fit_seconds"] = time.time() - fit_start
        finally:
            weighted.unpersist()
        info["iterations"] = int(model.summary.totalIterations)
        predict_start = time.time()
        test_ids, y_true, y_pred, proba = lr.collect_predictions(lr.predict_mllib(model, test))
    else:
        if cfg.sample.method != "adasyn":
            ids, X, y, w = lr.collect_features(train, cfg.lr.sklearn_max_rows)
        label_counts = {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
        cw = _class_weights(cfg, label_counts)
        fit_w = w * (np.vectorize(cw.get)(y) if cw else 1.0)
        total_weight = float(fit_w.sum())
        fit_start = time.time()
        model = lr.fit_sklearn(X, y, fit_w, cfg.lr.C, cfg.lr.max_iter)
        info["fit_seconds"] = time.time() - fit_start
        info["iterations"] = int(np.max(model.n_iter_))
        predict_start = time.time()
        test_ids, X_test, y_true, _ = lr.collect_features(test, cfg.lr.sklearn_max_rows)
        order = np.argsort(test_ids, kind="stable")
        test_ids, X_test, y_true = test_ids[order], X_test[order], y_true[order]
        proba_known = model.predict_proba(X_test)
        proba = np.zeros((len(test_ids), metrics.N_CLASSES))
        proba[:, model.classes_] = proba_known
        y_pred = model.classes_[np.argmax(proba_known, axis=1)]
    info.update({
        "model": model,
        "train_rows": int(sum(label_counts.values())),
        "label_counts_fit": {str(k): v for k, v in sorted(label_counts.items())},
        "total_fit_weight": float(total_weight),
        "predict_seconds": time.time() - predict_start,
        "test_ids": test_ids, "y_true": y_true, "y_pred": y_pred, "proba": proba,
        "seconds": time.time() - started,
    })
    return info


def config_hash(cfg: Config) -> str:
    """What a trained LR depends on besides its input: lr.*, sample.*, the bootstrap settings
    (not evaluate.model/model_dir, which only steer the evaluate stage)."""
    blob = json.dumps({"lr": dataclasses.asdict(cfg.lr), "sample": dataclasses.asdict(cfg.sample),
                       "bootstrap": cfg.evaluate.bootstrap, "seed": cfg.evaluate.seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Fit the LR baseline on encode/<tag>, evaluate on test, save the model and a results row."""
    tag = cfg.encode_tag()
    engine = cfg.lr.engine
    encode_dir = cfg.encode_dir()
    output = evaluate_stage.default_model_dir(cfg, "lr")
    results_dir = cfg.stage_dir("results")
    outcome: dict = {}

    def write(staging: str) -> dict:
        train = read_features(spark, encode_dir, "train")
        test = read_features(spark, encode_dir, "test")
        fitted = fit_and_score(spark, cfg, train, test)
        if engine == "mllib":
            fitted["model"].write().save(staging + "/" + evaluate_stage.MLLIB_MODEL)
        else:
            storage.write_text(spark, staging + "/" + evaluate_stage.SKLEARN_MODEL,
                               json.dumps(lr.sklearn_to_dict(fitted["model"])))
        eval_start = time.time()
        summary = metrics.summary(fitted["y_true"], fitted["y_pred"])
        ci = (metrics.bootstrap_ci(fitted["y_true"], fitted["y_pred"], cfg.evaluate.bootstrap,
                                   cfg.evaluate.seed) if cfg.evaluate.bootstrap else None)
        eval_seconds = time.time() - eval_start
        storage.write_text(spark, staging + "/metrics.json",
                           json.dumps({"summary": summary, "ci": ci}, indent=2))
        run_id = evaluate_stage.new_run_id(f"lr_{engine}", tag)
        numbers = {
            "run_id": run_id, "tag": tag, "engine": engine, "model_kind": "lr",
            "encode_dir": storage.qualify(encode_dir),
            "train_rows": fitted["train_rows"], "test_rows": int(len(fitted["y_true"])),
            "label_counts_fit": fitted["label_counts_fit"],
            "iterations": fitted["iterations"], "total_fit_weight": fitted["total_fit_weight"],
            "fit_seconds": round(fitted["fit_seconds"], 3),
            "predict_seconds": round(fitted["predict_seconds"], 3),
            "eval_seconds": round(eval_seconds, 3),
            "score": summary["score"], "accuracy": summary["accuracy"],
            "macro_f1": summary["macro_f1"], "ci": ci,
        }
        for key in ("adasyn_rows_added", "reg_param_effective"):
            if key in fitted:
                numbers[key] = fitted[key]
        outcome.update(fitted=fitted, summary=summary, ci=ci, numbers=numbers)
        return numbers

    manifest = storage.run_stage(
        spark, stage="train-lr", output=output,
        config_hash=config_hash(cfg), config=cfg.to_dict(),
        upstream={encode_dir: "encode"}, force=force, write=write)
    if manifest.get("skipped"):
        return {k: manifest.get(k) for k in ("run_id", "tag", "engine", "score", "accuracy",
                                             "macro_f1", "ci", "output", "skipped")}
    # Results row and predictions only once the model is published, so a row always points
    # at a model that exists.
    fitted, numbers = outcome["fitted"], outcome["numbers"]
    results.save_predictions(results_dir, numbers["run_id"], fitted["test_ids"], fitted["y_true"],
                             fitted["y_pred"], fitted["proba"])
    rows_seen = fitted["train_rows"] * fitted["iterations"]
    row = evaluate_stage.result_row(
        cfg, model="lr", engine=engine, stage="train-lr", run_id=numbers["run_id"],
        model_dir=manifest["output"], summary=outcome["summary"], ci=outcome["ci"],
        extra={"train_rows": fitted["train_rows"], "iterations": fitted["iterations"],
               "rows_seen": rows_seen, "epochs": None,
               "fit_seconds": numbers["fit_seconds"], "predict_seconds": numbers["predict_seconds"],
               "eval_seconds": numbers["eval_seconds"], "stage_seconds": manifest.get("seconds"),
               "samples_per_s": rows_seen / fitted["fit_seconds"] if fitted["fit_seconds"] else None,
               "adasyn_rows_added": numbers.get("adasyn_rows_added"),
               "lr.reg_param_effective": numbers.get("reg_param_effective")},
        sections=("lr", "sample", "encode"))
    results.append_result(results_dir, row)
    return {**{k: numbers[k] for k in ("run_id", "tag", "engine", "score", "accuracy", "macro_f1",
                                       "ci", "train_rows", "test_rows", "iterations")},
            "per_class": outcome["summary"]["per_class"], "output": manifest["output"],
            "skipped": False}
