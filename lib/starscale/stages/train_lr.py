"""train-lr: the logistic-regression baseline (Spark MLlib or scikit-learn) on the TF-IDF features.

Input: <run.output_dir>/encode/<tag>/features (split=train|validation|test; train already
resampled). Output: <run.output_dir>/models/lr_<lr.engine>/<tag>/ holding the model
(``model/`` for MLlib, ``sklearn_model.json`` for scikit-learn), ``metrics.json`` and the
manifest; one results row (results.ResultRow) appended to results/results.parquet and the test
predictions saved under results/predictions/<run_id>.parquet, both before the model folder is
published (the manifest names the row's run_id). Scoring: model_store.score_table, as evaluate.

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

from starscale import layout, lr, metrics, model_store, results, storage, verdict
from starscale.config import Config


def _strategy_by_label(strategy):
    """sample.strategy keyed by star → keyed by label (star − 1); named strategies unchanged."""
    if isinstance(strategy, dict):
        return {int(star) - 1: int(n) for star, n in strategy.items()}
    return strategy


def _adasyn(cfg: Config, train: DataFrame):
    """Collect train features, ADASYN them on the driver → (ids, X, y, w) with synthetic rows."""
    from starscale.resample import adasyn_resample
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


def _mllib_fitter(spark, cfg: Config, train: DataFrame, adasyn: tuple | None):
    """The weighted MLlib train frame (persisted) → (fit(reg_param) → (model, point), label
    counts, total weight, release, the default regParam)."""
    if adasyn is not None:
        ids, X, y, w = adasyn
        train = lr.sparse_rows_frame(spark, X, y, w, ids)
    label_counts = {int(r["label"]): int(r["count"])
                    for r in train.groupBy("label").count().collect()}
    weighted = lr.with_fit_weight(train, _class_weights(cfg, label_counts)).persist()
    total_weight = weighted.agg(F.sum(lr.FIT_WEIGHT)).first()[0]
    default = (cfg.lr.reg_param if cfg.lr.reg_param is not None
               else lr.mllib_reg_for_C(cfg.lr.C, total_weight))

    def fit_one(reg_param: float):
        model = lr.fit_mllib(weighted, reg_param, cfg.lr.elastic_net, cfg.lr.max_iter)
        history = list(model.summary.objectiveHistory)
        return model, lr.convergence(int(model.summary.totalIterations), cfg.lr.max_iter, history)

    return fit_one, label_counts, float(total_weight), weighted.unpersist, default


def _sklearn_fitter(cfg: Config, train: DataFrame, adasyn: tuple | None):
    """The same for scikit-learn: C = 1/(regParam · Σ weights), the MLlib objective."""
    ids, X, y, w = adasyn if adasyn is not None else lr.collect_features(train,
                                                                         cfg.lr.sklearn_max_rows)
    label_counts = {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
    cw = _class_weights(cfg, label_counts)
    fit_w = w * (np.vectorize(cw.get)(y) if cw else 1.0)
    total_weight = float(fit_w.sum())
    default = (cfg.lr.reg_param if cfg.lr.reg_param is not None
               else lr.mllib_reg_for_C(cfg.lr.C, total_weight))

    def fit_one(reg_param: float):
        model = lr.fit_sklearn(X, y, fit_w, 1.0 / (reg_param * total_weight), cfg.lr.max_iter)
        return model, lr.convergence(int(np.max(model.n_iter_)), cfg.lr.max_iter, None)

    return fit_one, label_counts, total_weight, lambda: None, default


def fit(spark, cfg: Config, train: DataFrame, validation_score=None) -> dict:
    """Fit the configured engine on train, once per lr.reg_grid value (or once with
    reg_param / C when the grid is empty), keeping the model with the best validation score.

    validation_score(model) → metrics.summary of that model on the validation split (None:
    no selection, only allowed with a single setting). Returns the chosen model and its numbers,
    with 'grid': one {reg_param, iterations, converged, objective_change, val_score, selected}
    per setting tried.
    """
    engine = cfg.lr.engine
    info: dict = {"engine": engine}
    adasyn = None
    if cfg.sample.method == "adasyn":
        ids, X, y, w, n_new = _adasyn(cfg, train)
        adasyn = (ids, X, y, w)
        info["adasyn_rows_added"] = int(n_new)
    if engine == "mllib":
        fit_one, label_counts, total_weight, release, default = _mllib_fitter(spark, cfg, train,
                                                                              adasyn)
    else:
        fit_one, label_counts, total_weight, release, default = _sklearn_fitter(cfg, train, adasyn)
    settings = list(cfg.lr.reg_grid) or [default]
    if validation_score is None and len(settings) > 1:
        raise ValueError("train-lr: lr.reg_grid needs a validation split to choose from")
    best, grid = None, []
    try:
        for reg_param in settings:
            fit_start = time.time()
            model, point = fit_one(reg_param)
            point.update(reg_param=reg_param, fit_seconds=round(time.time() - fit_start, 3))
            val = validation_score(model) if validation_score is not None else None
            point["val_score"] = val["score"] if val else None
            _warn_convergence(cfg, point)
            grid.append(point)
            if best is None or (val and val["score"] > best[2]["score"]):
                best = (model, point, val or {"score": float("nan")})
    finally:
        release()
    model, point, val = best
    for p in grid:
        p["selected"] = p is point
    info.update(_grid_edge(cfg, grid, point))
    info.update({
        "model": model, "validation": val if validation_score is not None else None,
        "grid": grid, "reg_param_effective": point["reg_param"],
        "iterations": point["iterations"], "converged": point["converged"],
        "fit_seconds": sum(p["fit_seconds"] for p in grid),
        "train_rows": int(sum(label_counts.values())),
        "label_counts_fit": {str(k): v for k, v in sorted(label_counts.items())},
        "total_fit_weight": float(total_weight),
    })
    return info


def _warn_convergence(cfg: Config, point: dict) -> None:
    if not point["converged"]:
        change = point.get("objective_change")
        print(f"starscale train-lr: warning: lr.max_iter={cfg.lr.max_iter} reached at regParam "
              f"{point['reg_param']:g} before convergence"
              + (f" (last relative objective change {change:.2e})" if change is not None else ""),
              flush=True)


def _grid_edge(cfg: Config, grid: list[dict], chosen: dict) -> dict:
    """A best value at an end of a grid of >= 3 points: say so (the optimum may lie outside)."""
    values = sorted(p["reg_param"] for p in grid)
    if not verdict.grid_edge(values, chosen["reg_param"]):
        return {}
    print(f"starscale train-lr: warning: the best regParam {chosen['reg_param']:g} is at the "
          f"edge of lr.reg_grid {values}; consider extending it", flush=True)
    return {"grid_edge": True}


def _validation_scorer(spark, engine: str, encode_dir: str, keep_dir: str):
    """fitted model → metrics.summary on the validation split, counted by Spark (no prediction
    row reaches the driver). Each candidate's predictions are written once, to
    keep_dir/<n>, and read back to count them; the summary's 'predictions' names that folder,
    so the chosen model's validation predictions are moved, not scored again."""
    tried = []

    def validation_score(fitted_model) -> dict:
        candidate = model_store.SavedModel("lr", engine, {}, model_store.lr_predictor(
            engine, fitted_model))
        path = layout.join(keep_dir, str(len(tried)))
        tried.append(path)
        summary = model_store.score_table(spark, candidate, encode_dir, "validation",
                                          save_to=path).summary()
        return {**summary, "predictions": path}
    return validation_score


def config_hash(cfg: Config) -> str:
    """What a trained LR depends on besides its input: lr.*, sample.*, the bootstrap settings
    (not evaluate.model/model_dir, which only steer the evaluate stage)."""
    blob = json.dumps({"lr": dataclasses.asdict(cfg.lr), "sample": dataclasses.asdict(cfg.sample),
                       "bootstrap": cfg.evaluate.bootstrap, "seed": cfg.evaluate.seed,
                       "selection": "validation"},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Fit the LR baseline on encode/<tag>, score the test split, write the results row and
    predictions, then publish the model."""
    tag = cfg.encode_tag()
    engine = cfg.lr.engine
    encode_dir = layout.encode_dir(cfg)
    output = layout.model_dir(cfg, "lr")
    results_dir = layout.results_dir(cfg)
    outcome: dict = {}

    def write(staging: str) -> dict:
        started = time.time()
        run_id = results.new_run_id(layout.model_name("lr", engine), tag)
        # every candidate's validation predictions, beside where the chosen one's end up (one
        # filesystem: a rename), under a _ name that readers of predictions/ skip
        candidates = layout.join(results_dir, results.PREDICTIONS_DIR, f"_candidates-{run_id}")
        try:
            fitted = fit(spark, cfg, model_store.read_features(spark, encode_dir, "train"),
                         _validation_scorer(spark, engine, encode_dir, candidates))
            model_store.save_lr(spark, staging, engine, fitted["model"])
            model = model_store.SavedModel("lr", engine, {}, model_store.lr_predictor(
                engine, fitted["model"]))
            # The predictions before the model is published: no published model lacks them.
            # Spark writes them and counts the written table; the test split is read once, for
            # the model chosen on validation, whose validation predictions (written while it
            # was scored for the choice) are moved beside them.
            scored = model_store.score_table(
                spark, model, encode_dir, "test",
                save_to=results.predictions_path(results_dir, run_id))
            val_path = results.predictions_path(results_dir, run_id, "validation")
            storage.delete(spark, val_path)
            storage.rename(spark, fitted["validation"]["predictions"], val_path)
        finally:
            storage.delete(spark, candidates)
        eval_start = time.time()
        summary = scored.summary()
        ci = scored.bootstrap_ci(cfg.evaluate.bootstrap, cfg.evaluate.seed)
        eval_seconds = time.time() - eval_start
        storage.write_text(spark, layout.join(staging, "metrics.json"),
                           json.dumps({"summary": summary, "ci": ci}, indent=2))
        numbers = _numbers(run_id, tag, engine, encode_dir, fitted, scored, summary, ci,
                           eval_seconds)
        results.write_row(results_dir, _row(cfg, numbers, summary, ci, output,
                                            stage_seconds=time.time() - started))
        outcome.update(summary=summary, numbers=numbers)
        return numbers

    manifest = storage.run_stage(
        spark, stage="train-lr", output=output,
        config_hash=config_hash(cfg), config=cfg.to_dict(),
        upstream={encode_dir: "encode"}, force=force, write=write)
    if manifest.get("skipped"):
        return {k: manifest.get(k) for k in ("run_id", "tag", "engine", "score", "accuracy",
                                             "macro_f1", "ci", "output", "skipped")}
    numbers = outcome["numbers"]
    return {**{k: numbers[k] for k in ("run_id", "tag", "engine", "score", "accuracy", "macro_f1",
                                       "ci", "train_rows", "test_rows", "iterations", "grid",
                                       "validation", "reg_param_effective")},
            "per_class": outcome["summary"]["per_class"], "output": manifest["output"],
            "skipped": False}


def _numbers(run_id: str, tag: str, engine: str, encode_dir: str, fitted: dict,
             scored: model_store.Scored, summary: dict, ci: dict | None,
             eval_seconds: float) -> dict:
    """The model's manifest numbers."""
    numbers = {
        "run_id": run_id, "tag": tag, "engine": engine, "model_kind": "lr",
        "encode_dir": storage.qualify(encode_dir),
        "train_rows": fitted["train_rows"], "test_rows": scored.rows,
        "label_counts_fit": fitted["label_counts_fit"],
        "iterations": fitted["iterations"], "total_fit_weight": fitted["total_fit_weight"],
        "fit_seconds": round(fitted["fit_seconds"], 3),
        "predict_seconds": round(scored.seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "score": summary["score"], "accuracy": summary["accuracy"],
        "macro_f1": summary["macro_f1"], "ci": ci,
    }
    for key in ("adasyn_rows_added", "reg_param_effective", "grid", "converged", "grid_edge"):
        if key in fitted:
            numbers[key] = fitted[key]
    numbers["validation"] = {k: fitted["validation"][k] for k in ("score", "accuracy",
                                                                 "macro_f1", "n")}
    return numbers


def _row(cfg: Config, numbers: dict, summary: dict, ci: dict | None, output: str,
         stage_seconds: float) -> results.ResultRow:
    rows_seen = numbers["train_rows"] * numbers["iterations"]
    fit_seconds = numbers["fit_seconds"]
    extra = {"lr.reg_param_effective": numbers["reg_param_effective"]}
    val = numbers["validation"]
    return results.ResultRow(
        run_id=numbers["run_id"], model="lr", engine=numbers["engine"], tag=numbers["tag"],
        sample_size=str(cfg.sample.size), sample_method=cfg.sample.method, stage="train-lr",
        model_dir=storage.qualify(output), run_name=cfg.run.name,
        metrics=metrics.metric_columns(summary, ci), bootstrap=cfg.evaluate.bootstrap,
        bootstrap_seed=cfg.evaluate.seed, train_rows=numbers["train_rows"],
        test_rows=numbers["test_rows"], rows_seen=rows_seen, iterations=numbers["iterations"],
        fit_seconds=fit_seconds, predict_seconds=numbers["predict_seconds"],
        eval_seconds=numbers["eval_seconds"], stage_seconds=round(stage_seconds, 3),
        samples_per_s=rows_seen / fit_seconds if fit_seconds else None,
        adasyn_rows_added=numbers.get("adasyn_rows_added"), sample_tag=cfg.sample_tag(),
        replicate=cfg.sample.replicate, val_score=val["score"], val_accuracy=val["accuracy"],
        val_macro_f1=val["macro_f1"], converged=numbers["converged"], lr_grid=numbers["grid"],
        params=results.model_params(cfg, "lr", extra))
