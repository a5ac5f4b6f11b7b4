"""evaluate: re-score a saved model on the test split and append a results row.

Input: a saved model (evaluate.model = lr | lstm; evaluate.model_dir, or by default
models/lr_<lr.engine>/<tag> or models/lstm/<tag>: starscale.layout) and encode/<tag> (features/
for LR, sequences/ for the LSTM). Output: <run.output_dir>/evaluate/<model>_<tag>/metrics.json +
manifest, a row in results/results.parquet (results.ResultRow) and the predictions under
results/predictions/<run_id>.parquet, both written before the folder is published.

Run: python -m starscale evaluate --conf conf/local.yaml --set evaluate.model=lstm
"""
from __future__ import annotations

import json
import time

from starscale import layout, metrics, model_store, results, storage
from starscale.config import Config

SUMMARY_KEYS = ("run_id", "model_kind", "engine", "tag", "test_rows", "score", "accuracy",
                "macro_f1", "ci", "output")


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Score the saved model on encode/<tag>'s test split; publish metrics; append a results row."""
    kind = cfg.evaluate.model
    tag = cfg.sample_tag()
    model_dir = cfg.evaluate.model_dir or layout.model_dir(cfg, kind)
    model_manifest = model_store.require(spark, kind, model_dir)
    # the LR's test features must come from the encode run whose TF-IDF the model was fit on
    encode_dir = (model_manifest.get("encode_dir") if kind == "lr" else None) \
        or layout.encode_dir(cfg)
    name = layout.model_name(kind, model_manifest.get("engine"))
    output = layout.evaluate_dir(cfg, name)
    results_dir = layout.results_dir(cfg)
    outcome: dict = {}

    def write(staging: str) -> dict:
        started = time.time()
        model = model_store.load(spark, kind, model_dir)
        run_id = results.new_run_id(name, tag)
        # The predictions before the folder is published: no published run lacks them.
        scored = model_store.score_table(spark, model, encode_dir, "test", cfg.lstm.batch_size,
                                         save_to=results.predictions_path(results_dir, run_id))
        summary = scored.summary()
        ci = scored.bootstrap_ci(cfg.evaluate.bootstrap, cfg.evaluate.seed)
        storage.write_text(spark, layout.join(staging, "metrics.json"),
                           json.dumps({"summary": summary, "ci": ci}, indent=2))
        results.write_row(results_dir, results.ResultRow(
            run_id=run_id, model=kind, engine=model.engine, tag=layout.model_tag(cfg, kind),
            sample_size=str(cfg.sample.size), sample_method=cfg.sample.method, stage="evaluate",
            model_dir=storage.qualify(model_dir), run_name=cfg.run.name,
            metrics=metrics.metric_columns(summary, ci), bootstrap=cfg.evaluate.bootstrap,
            bootstrap_seed=cfg.evaluate.seed, trained_run_id=model_manifest.get("run_id"),
            test_rows=scored.rows, predict_seconds=round(scored.seconds, 3),
            stage_seconds=round(time.time() - started, 3)))
        outcome["per_class"] = summary["per_class"]
        return {"run_id": run_id, "model_kind": kind, "engine": model.engine, "tag": tag,
                "model_dir": storage.qualify(model_dir), "encode_dir": storage.qualify(encode_dir),
                "test_rows": scored.rows, "score": summary["score"],
                "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"], "ci": ci,
                "predict_seconds": round(scored.seconds, 3)}

    manifest = storage.run_stage(
        spark, stage="evaluate", output=output, config_hash=cfg.section_hash("evaluate"),
        config=cfg.to_dict(), upstream={model_dir: model_store.PRODUCERS[kind],
                                        encode_dir: "encode"},
        force=force, write=write)
    brief = {k: manifest.get(k) for k in SUMMARY_KEYS}
    if manifest.get("skipped"):
        return {**brief, "skipped": True}
    return {**brief, "per_class": outcome["per_class"], "skipped": False}
