"""train-lstm: the LSTM trained with Horovod, each worker streaming its own Parquet shards.

Input: encode/<encode tag> (vocab.txt, sequences/). Output: models/lstm/<sample tag>
(model.json + weights.npz, vocab.txt, config.json, manifest with the run_id), checkpoints under checkpoints/lstm/<sample tag>
(kept between runs so a rerun resumes), a results row (results.ResultRow) and the test
predictions under results/, both written before the model folder is published.

The training itself is the starscale.training package: training.launch builds the ranks'
arguments and runs them with train.launcher (spark | horovodrun | local), training.rank is the
per-rank function; the model is scored like every model, by model_store.score_table.
See docs/training.md.

Run: python -m starscale train-lstm --conf conf/local.yaml
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from starscale import layout, metrics, model_store, results, storage
from starscale.config import Config
from starscale.training import checkpoints, launch
from starscale.training.hooks import TrainHooks
from starscale.training.rank import RankArgs, architecture, train_rank

STAGE = launch.STAGE
RANK_KEYS = ("workers", "epochs_run", "epochs_completed", "initial_epoch", "stopped_early",
             "rows_seen", "samples_per_s", "fit_seconds", "history", "ranks")


def run(spark, cfg: Config, force: bool = False, hooks: dict | None = None) -> dict:
    """Train (or resume), score the test split, write the results row, publish the model.

    hooks: test hooks (starscale.training.hooks; also $STARSCALE_TRAIN_HOOKS as JSON).
    """
    train_hooks = TrainHooks.resolve(hooks)
    encode_dir = storage.qualify(layout.encode_dir(cfg))
    output = storage.qualify(layout.model_dir(cfg, "lstm"))
    encode_manifest = storage.require_manifest(spark, encode_dir, "encode")
    chash = launch.config_hash(cfg)
    if (cfg.train.launcher == "horovodrun" and launch.in_horovodrun()
            and int(os.environ["HOROVOD_RANK"]) != 0):
        return _train_only(spark, cfg, output, chash, encode_dir, encode_manifest, train_hooks,
                           force)
    box: dict[str, Any] = {}

    def write(staging: str) -> dict[str, Any]:
        started = time.time()
        args = launch.rank_args(cfg, encode_manifest, train_hooks)
        rank_results = _train(cfg, args, force)
        train_seconds = time.time() - started
        bundle = model_store.save_lstm(staging, checkpoints.final_model_path(args.ckpt_dir),
                                       args.vocab_path, cfg.to_dict(), architecture(args))
        # Scored as it will be loaded: rebuilt from the bundle's model.json and weights.
        model = model_store.SavedModel("lstm", None, {}, model_store.load_lstm_bundle(bundle))
        results_dir = layout.results_dir(cfg)
        run_id = results.new_run_id("lstm", cfg.lstm_tag())
        # The predictions before the model is published: no published model lacks them.
        validation = model_store.score_table(
            spark, model, encode_dir, "validation", cfg.lstm.batch_size,
            save_to=results.predictions_path(results_dir, run_id, "validation"))
        scored = model_store.score_table(spark, model, encode_dir, "test", cfg.lstm.batch_size,
                                         save_to=results.predictions_path(results_dir, run_id))
        box["predictions"] = scored.saved
        summary = scored.summary()
        ci = scored.bootstrap_ci(cfg.evaluate.bootstrap, cfg.evaluate.seed)
        numbers = _numbers(cfg, run_id, args, rank_results, scored, summary, ci, train_seconds)
        numbers["validation"] = {k: v for k, v in validation.summary().items()
                                 if k in ("score", "accuracy", "macro_f1", "n")}
        results.write_row(results_dir, _row(cfg, numbers, summary, ci, output,
                                            time.time() - started))
        box.update(ranks=rank_results, summary=summary)
        return numbers

    manifest = storage.run_stage(spark, stage=STAGE, output=output, config_hash=chash,
                                 config=cfg.to_dict(), upstream={encode_dir: "encode"},
                                 force=force, write=write)
    if manifest.get("skipped"):
        return {"output": output, "skipped": True, "run_id": manifest.get("run_id")}
    summary = box["summary"]
    return {"output": output, "skipped": False, "run_id": manifest["run_id"],
            "predictions": box["predictions"], "score": summary["score"],
            "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
            **{k: manifest[k] for k in RANK_KEYS},
            "review_ids": {r["rank"]: r.get("review_ids") for r in box["ranks"]}
            if train_hooks.return_ids else None}


def _train(cfg: Config, args: RankArgs, force: bool) -> list[dict[str, Any]]:
    """Every rank's result, sorted by rank (this process is rank 0 under horovodrun)."""
    if force:
        checkpoints.clear_checkpoints(args.ckpt_dir)   # --force: train from scratch
    if cfg.train.launcher == "horovodrun" and launch.in_horovodrun():
        checkpoints.clear_failure(args.ckpt_dir)
        rank_results = launch.gather_results(train_rank(
            dataclasses.replace(args, attempt=launch.horovodrun_attempt())))
    else:
        rank_results = launch.launch(cfg, args)
    return sorted(rank_results, key=lambda r: r["rank"])


def _train_only(spark, cfg: Config, output: str, chash: str, encode_dir: str,
                encode_manifest: dict, hooks: TrainHooks, force: bool) -> dict:
    """Started by horovodrun: ranks other than 0 only train; rank 0 does the rest."""
    existing = storage.read_manifest(spark, output)
    if existing and not force and existing.get("config_hash") == chash and existing.get(
            "inputs") == {encode_dir: storage.fingerprint(encode_manifest)}:
        return {"skipped": True, "rank": int(os.environ["HOROVOD_RANK"])}
    result = train_rank(dataclasses.replace(launch.rank_args(cfg, encode_manifest, hooks),
                                            attempt=launch.horovodrun_attempt()))
    launch.gather_results(result)   # rank 0 collects every rank's
    return {"skipped": False, **result}


def _numbers(cfg: Config, run_id: str, args: RankArgs, rank_results: list[dict], scored,
             summary: dict, ci: dict | None, train_seconds: float) -> dict[str, Any]:
    """The model's manifest numbers: the run, the training (rank 0's view), the test scores."""
    r0 = rank_results[0]
    return {
        "run_id": run_id, "model_kind": "lstm",
        "tag": cfg.lstm_tag(), "workers": r0["size"], "launcher": cfg.train.launcher,
        "steps_per_epoch": r0["steps_per_epoch"], "initial_epoch": r0["initial_epoch"],
        "epochs_run": r0["epochs_run"], "epochs_completed": r0["epochs_completed"],
        "epochs_planned": r0["epochs_planned"], "monitor": r0["monitor"],
        "best_value": r0["best_value"],
        "stopped_early": r0["stopped_early"], "best_epoch": r0["best_epoch"],
        "rows_seen": sum(r["rows_seen"] for r in rank_results),
        "train_rows": {str(k): v for k, v in args.train_rows.items()},
        "validation_rows": {str(k): v for k, v in args.val_rows.items()},
        "test_rows": scored.rows,
        "class_weights": args.class_weights, "learning_rate": r0["learning_rate"],
        "samples_per_s": r0["samples_per_s"], "fit_seconds": r0["train_seconds"],
        "train_wall_seconds": round(train_seconds, 3),
        "predict_seconds": round(scored.seconds, 3),
        "history": r0["history"], "cudnn": r0["cudnn"],
        "ranks": [{k: v for k, v in r.items() if k != "review_ids"} for r in rank_results],
        "test": dict(summary), "test_ci": ci,
    }


def _row(cfg: Config, numbers: dict, summary: dict, ci: dict | None, output: str,
         stage_seconds: float) -> results.ResultRow:
    return results.ResultRow(
        run_id=numbers["run_id"], model="lstm", engine=f"horovod-{cfg.train.launcher}",
        tag=numbers["tag"], sample_size=str(cfg.sample.size), sample_method=cfg.sample.method,
        stage=STAGE, model_dir=output, run_name=cfg.run.name,
        metrics=metrics.metric_columns(summary, ci), bootstrap=cfg.evaluate.bootstrap,
        bootstrap_seed=cfg.evaluate.seed,
        train_rows=sum(int(v) for v in numbers["train_rows"].values()),
        test_rows=numbers["test_rows"], rows_seen=numbers["rows_seen"],
        epochs_run=numbers["epochs_run"], epochs_completed=numbers["epochs_completed"],
        best_epoch=numbers["best_epoch"], stopped_early=numbers["stopped_early"],
        workers=numbers["workers"], steps_per_epoch=numbers["steps_per_epoch"],
        samples_per_s=numbers["samples_per_s"], fit_seconds=numbers["fit_seconds"],
        predict_seconds=numbers["predict_seconds"],
        train_wall_seconds=numbers["train_wall_seconds"], stage_seconds=round(stage_seconds, 3),
        sample_tag=cfg.sample_tag(), replicate=cfg.sample.replicate,
        val_score=numbers["validation"]["score"], val_accuracy=numbers["validation"]["accuracy"],
        val_macro_f1=numbers["validation"]["macro_f1"],
        params=results.model_params(cfg, "lstm"))
