"""train-lstm: the LSTM trained with Horovod, each worker streaming its own Parquet shards.

Input: encode/<encode tag> (vocab.txt, sequences/). Output: models/lstm/<sample tag> (model.keras,
vocab.txt, config.json, manifest), checkpoints under checkpoints/lstm/<sample tag> (kept between runs so a rerun
resumes), a results row and the test predictions under results/.

Launchers (train.launcher): spark → horovod.spark.run, one Spark task per worker; horovodrun →
`horovodrun -np N --gloo python -m starscale.hvd_train ARGS.json` run from here (or this stage
started under horovodrun itself: every rank runs the same function, rank 0 publishes); local →
one process, in this one. See docs/training.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from starscale import hvd_train, storage
from starscale.config import Config

STAGE = "train-lstm"
HOOKS_ENV = "STARSCALE_TRAIN_HOOKS"   # JSON test hooks, e.g. {"nan_at_step": 5}


def paths(cfg: Config) -> dict[str, str]:
    tag = cfg.sample_tag()      # the LSTM does not depend on the TF-IDF part of the encode tag
    return {"encode": storage.qualify(cfg.encode_dir()),
            "output": storage.qualify(os.path.join(cfg.stage_dir("models"), "lstm", tag)),
            "checkpoints": storage.qualify(os.path.join(cfg.stage_dir("checkpoints"), "lstm", tag)),
            "results": storage.qualify(cfg.stage_dir("results"))}


def config_hash(cfg: Config) -> str:
    """What the trained weights depend on besides the encode output (fingerprinted separately):
    lstm.*, the effective worker count, lr scaling/warmup and the seed. Timeouts, the launcher
    as such and evaluate.* are left out, so raising a timeout after a failure still resumes."""
    t = cfg.train
    workers = 1 if t.launcher == "local" else t.workers
    key = json.dumps({"lstm": cfg.section_hash("lstm"), "workers": workers, "scale_lr": t.scale_lr,
                      "warmup_epochs": t.warmup_epochs, "use_gpu": t.use_gpu,
                      "seed": cfg.run.seed}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def balanced_class_weights(label_counts: np.ndarray) -> list[float]:
    """sklearn's 'balanced': n / (classes × count) per class; 1.0 for a class with no rows."""
    counts = np.asarray(label_counts, dtype=np.float64)
    n, k = counts.sum(), len(counts)
    return [float(n / (k * c)) if c > 0 else 1.0 for c in counts]


def _label_counts(files: list[str], seq_dir: str) -> np.ndarray:
    import pyarrow.parquet as pq
    fs, _ = hvd_train.filesystem(seq_dir)
    counts = np.zeros(5, dtype=np.int64)
    for f in files:
        labels = pq.read_table(f, columns=["label"], filesystem=fs).column("label").to_numpy()
        if labels.size and (labels.min() < 0 or labels.max() > 4):
            raise ValueError(f"{f}: label outside 0..4")
        counts += np.bincount(labels.astype(np.int64), minlength=5)[:5]
    return counts


def worker_args(cfg: Config, encode_manifest: dict, p: dict[str, str],
                hooks: dict | None = None) -> dict[str, Any]:
    """Everything a rank needs, as plain values (pickled into Spark tasks, JSON for horovodrun)."""
    seq_dir = p["encode"] + "/sequences"
    train = hvd_train.list_shards(seq_dir, "train")
    if not train:
        raise ValueError(f"{seq_dir}/split=train: no shards; run the 'encode' stage")
    if len(train) < cfg.train.workers:
        raise ValueError(f"{seq_dir}: {len(train)} train shard(s) for train.workers="
                         f"{cfg.train.workers}; set encode.shards >= train.workers and re-run encode")
    val = hvd_train.list_shards(seq_dir, "validation")
    # Row counts from the Parquet footers: exact, cheap, and what the ranks will actually read.
    train_rows = {s: hvd_train.count_rows(f, seq_dir) for s, f in train.items()}
    val_rows = {s: hvd_train.count_rows(f, seq_dir) for s, f in val.items() if f}
    declared = (encode_manifest.get("rows") or {}).get("train")
    if isinstance(declared, dict):
        declared = {int(k): int(v) for k, v in declared.items() if int(v) > 0}
        if declared != train_rows:
            raise ValueError(f"{p['encode']}: manifest rows.train {declared} differs from the "
                             f"Parquet files {train_rows}; re-run encode")
    manifest_weights = encode_manifest.get("class_weights_balanced")
    if cfg.sample.method == "class_weight" or cfg.lstm.class_weight == "none":
        # sample.method=class_weight already put the balanced class weight in the weight column.
        class_weights = [1.0] * 5
    elif isinstance(manifest_weights, dict) and manifest_weights:
        # encode's manifest: {label: weight} over the train rows written (absent class: unused)
        class_weights = [float(manifest_weights.get(str(c), 1.0)) for c in range(5)]
    else:
        class_weights = balanced_class_weights(
            _label_counts([f for fs in train.values() for f in fs], seq_dir))
    vocab_path = p["encode"] + "/vocab.txt"
    fs, vpath = hvd_train.filesystem(vocab_path)
    with fs.open_input_stream(vpath) as src:
        vocab_size = len(src.read().decode("utf-8").splitlines())
    max_len = cfg.encode.max_len
    first = next((f for fs_ in train.values() for f in fs_), None)
    if first:
        import pyarrow.parquet as pq
        rfs, _ = hvd_train.filesystem(seq_dir)
        sample = pq.ParquetFile(first, filesystem=rfs).read_row_group(0, columns=["ids"])
        if sample.num_rows:
            max_len = len(sample.column("ids")[0].as_py())
    fingerprint = hashlib.sha256((config_hash(cfg) + storage.fingerprint(encode_manifest))
                                 .encode()).hexdigest()[:16]
    return {"config": cfg.to_dict(), "seq_dir": seq_dir, "vocab_path": vocab_path,
            "vocab_size": vocab_size, "max_len": max_len,
            "train_rows": {str(k): v for k, v in train_rows.items()},
            "val_rows": {str(k): v for k, v in val_rows.items()},
            "class_weights": class_weights, "ckpt_dir": p["checkpoints"],
            "fingerprint": fingerprint, "hooks": dict(hooks or {}), "hard_exit": True}


def horovodrun_command(workers: int, start_timeout_s: int, args_path: str,
                       nics: list[str] | tuple[str, ...] = ()) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    iface = ["--network-interface", ",".join(nics)] if nics else []
    return [exe if os.path.exists(exe) else "horovodrun", "-np", str(workers), "--gloo",
            "-H", f"localhost:{workers}", "--start-timeout", str(start_timeout_s), *iface,
            sys.executable, "-m", "starscale.hvd_train", args_path]


def _failure(ckpt_dir: str, exc: BaseException, watch: "FailureWatch | None" = None
             ) -> RuntimeError:
    info = hvd_train.read_failure(ckpt_dir)
    reason = info["message"] if info else f"{type(exc).__name__}: {exc}"
    if watch is not None and watch.fired:
        reason += f" ({watch.fired})"
    return RuntimeError(f"{STAGE}: training failed: {reason}")


class FailureWatch:
    """Driver side: once a rank has recorded a failure (_FAILURE.json), the launcher gets
    train.failure_grace_s to notice that every rank has ended; past that, `abort` (cancel the
    Spark job, or kill horovodrun) so the stage fails instead of waiting forever on a rank that
    cannot exit (a survivor stuck after its peer's machine died, a hung process). The ranks'
    own stall watchdog covers a rank stuck *before* any failure is recorded."""

    def __init__(self, ckpt_dir: str, grace_s: float, abort, what: str, poll_s: float = 1.0):
        self.ckpt_dir, self.grace_s, self.abort, self.what = ckpt_dir, float(grace_s), abort, what
        self.poll_s = poll_s
        self.fired: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="starscale-failure-watch",
                                        daemon=True)

    def __enter__(self) -> "FailureWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            try:
                failed = hvd_train.read_failure(self.ckpt_dir)
            except Exception:                # noqa: BLE001 — storage hiccup: look again
                continue
            if failed:
                break
        else:
            return
        if self._done.wait(self.grace_s):
            return
        self.fired = (f"a rank failed and the others had not exited {self.grace_s:g}s later "
                      f"(train.failure_grace_s): {self.what}")
        print(f"{STAGE}: {self.fired}", file=sys.stderr, flush=True)
        self.abort()


def _cancel_spark_jobs() -> None:
    """Cancel the running Spark jobs (Horovod's ranks are their tasks): Spark kills the tasks'
    Python workers, which takes their task services and rank processes down with them."""
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.cancelAllJobs()


def launch(cfg: Config, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Run train_rank on train.workers ranks with the configured launcher; every rank's result."""
    hvd_train.clear_failure(args["ckpt_dir"])
    launcher = cfg.train.launcher
    if launcher == "local":
        if cfg.train.workers != 1:
            print(f"{STAGE}: launcher local runs 1 process (train.workers={cfg.train.workers} "
                  f"ignored)", file=sys.stderr)
        return [hvd_train.train_rank({**args, "hard_exit": False})]
    if launcher == "spark":
        import horovod.spark
        if cfg.train.bind_host:
            from starscale import loopback
            # Horovod: the driver service and Gloo rendezvous listen on this address only.
            loopback.pin_horovod_services(cfg.train.bind_host)
        watch = FailureWatch(args["ckpt_dir"], cfg.train.failure_grace_s, _cancel_spark_jobs,
                             "Spark job cancelled")
        try:
            with watch:
                # Horovod: one Spark task per worker; the function gets plain values only.
                return horovod.spark.run(hvd_train.train_rank, args=(args,),
                                         num_proc=cfg.train.workers,
                                         start_timeout=cfg.train.start_timeout_s, use_gloo=True,
                                         nics=set(cfg.train.nics) or None,
                                         verbose=1, stdout=sys.stdout, stderr=sys.stderr)
        except Exception as exc:             # noqa: BLE001 — re-raised with the rank's reason
            raise _failure(args["ckpt_dir"], exc, watch) from exc
    # horovodrun from here: args as a JSON file beside the checkpoints (local disk).
    local = storage.local_path(args["ckpt_dir"])
    if local is None:
        raise ValueError(f"train.launcher=horovodrun needs a local checkpoints dir, got "
                         f"{args['ckpt_dir']}")
    os.makedirs(local, exist_ok=True)
    args_path = os.path.join(local, "_run_args.json")
    with open(args_path, "w") as fh:
        json.dump(args, fh)
    result_path = args_path.rsplit(".json", 1)[0] + ".result.json"
    if os.path.exists(result_path):
        os.remove(result_path)
    cmd = horovodrun_command(cfg.train.workers, cfg.train.start_timeout_s, args_path,
                             cfg.train.nics)
    print(f"{STAGE}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    with FailureWatch(args["ckpt_dir"], cfg.train.failure_grace_s, lambda: _stop(proc),
                      "horovodrun stopped") as watch:
        returncode = proc.wait()
    if returncode != 0 or not os.path.exists(result_path):
        raise _failure(args["ckpt_dir"], RuntimeError(f"horovodrun exited with {returncode}"),
                       watch)
    with open(result_path) as fh:
        return json.load(fh)


def _stop(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """SIGTERM horovodrun (it terminates its ranks), SIGKILL if it is still there after wait_s."""
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def predict_split(model, seq_dir: str, split: str, batch_size: int) -> dict[str, np.ndarray]:
    """review_id, label and class probabilities of every row of one split, in file order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    fs, _ = hvd_train.filesystem(seq_dir)
    ids_out, labels, probas = [], [], []
    for files in hvd_train.list_shards(seq_dir, split).values():
        for f in files:
            for batch in pq.ParquetFile(f, filesystem=fs).iter_batches(
                    batch_size=max(batch_size, 1024), columns=["review_id", "label", "ids"]):
                n = batch.num_rows
                if not n:
                    continue
                x = pc.list_flatten(batch.column("ids")).to_numpy(zero_copy_only=False)
                probas.append(model.predict(x.astype(np.int32).reshape(n, -1),
                                            batch_size=batch_size, verbose=0))
                ids_out.extend(batch.column("review_id").to_pylist())
                labels.append(batch.column("label").to_numpy(zero_copy_only=False))
    if not labels:
        raise ValueError(f"{seq_dir}/split={split}: no rows to predict")
    return {"review_id": np.asarray(ids_out, dtype=object),
            "label": np.concatenate(labels).astype(np.int64),
            "proba": np.concatenate(probas).astype(np.float64)}


def _copy(src: str, dst: str) -> None:
    sfs, spath = hvd_train.filesystem(src)
    dfs, dpath = hvd_train.filesystem(dst)
    dfs.create_dir(dpath.rsplit("/", 1)[0], recursive=True)
    with sfs.open_input_stream(spath) as i, dfs.open_output_stream(dpath) as o:
        o.write(i.read())


def _evaluate(cfg: Config, model_path: str, seq_dir: str) -> dict[str, Any]:
    from starscale import lstm, metrics
    local_dir = None
    if storage.local_path(model_path) is None:
        import tempfile
        local_dir = tempfile.mkdtemp(prefix="starscale-model-")
        _copy(model_path, os.path.join(local_dir, lstm.MODEL_FILE))
        model_path = os.path.join(local_dir, lstm.MODEL_FILE)
    try:
        model = lstm.load_model(storage.local_path(model_path) or model_path)
        started = time.time()
        pred = predict_split(model, seq_dir, "test", cfg.lstm.batch_size)
        seconds = time.time() - started
    finally:
        if local_dir:
            shutil.rmtree(local_dir, ignore_errors=True)
    y_pred = pred["proba"].argmax(axis=1)
    out = {"pred": pred, "y_pred": y_pred, "predict_seconds": round(seconds, 3),
           "summary": metrics.summary(pred["label"], y_pred), "ci": None}
    if cfg.evaluate.bootstrap > 0:
        out["ci"] = metrics.bootstrap_ci(pred["label"], y_pred, cfg.evaluate.bootstrap,
                                         cfg.evaluate.seed)
    return out


def _in_horovodrun() -> bool:
    return "HOROVOD_RANK" in os.environ and "HOROVOD_SIZE" in os.environ


def run(spark, cfg: Config, force: bool = False, hooks: dict | None = None) -> dict:
    """Train (or resume), publish the model, score the test split, append a results row.

    hooks (tests only; also $STARSCALE_TRAIN_HOOKS as JSON): {"nan_at_step": k} makes global
    step k's loss NaN; {"return_ids": True} returns the review_ids each rank read;
    {"epoch_sleep_s": s} pauses after each epoch's checkpoint.
    """
    from starscale import lstm, metrics, results

    # Test hooks may also come from the environment (a CLI run in a subprocess).
    hooks = {**json.loads(os.environ.get(HOOKS_ENV) or "{}"), **(hooks or {})}
    p = paths(cfg)
    encode_manifest = storage.require_manifest(spark, p["encode"], "encode")
    chash = config_hash(cfg)
    if cfg.train.launcher == "horovodrun" and _in_horovodrun() and int(os.environ["HOROVOD_RANK"]) != 0:
        # Started by horovodrun: ranks other than 0 only train; rank 0 does the rest.
        existing = storage.read_manifest(spark, p["output"])
        if existing and not force and existing.get("config_hash") == chash and existing.get(
                "inputs") == {p["encode"]: storage.fingerprint(encode_manifest)}:
            return {"skipped": True, "rank": int(os.environ["HOROVOD_RANK"])}
        import horovod.tensorflow as hvd_tf
        args = worker_args(cfg, encode_manifest, p, hooks)
        result = hvd_train.train_rank(args)
        hvd_tf.allgather_object(result, name="rank_results")   # rank 0 collects every rank's
        return {"skipped": False, **result}

    box: dict[str, Any] = {}

    def write(staging: str) -> dict[str, Any]:
        started = time.time()
        args = worker_args(cfg, encode_manifest, p, hooks)
        if force:
            hvd_train.clear_checkpoints(p["checkpoints"])   # --force: train from scratch
        if cfg.train.launcher == "horovodrun" and _in_horovodrun():
            import horovod.tensorflow as hvd_tf
            hvd_train.clear_failure(args["ckpt_dir"])
            rank_results = hvd_tf.allgather_object(hvd_train.train_rank(args), name="rank_results")
        else:
            rank_results = launch(cfg, args)
        rank_results = sorted(rank_results, key=lambda r: r["rank"])
        train_seconds = time.time() - started
        _copy(p["checkpoints"] + "/" + hvd_train.FINAL_FILE, staging + "/" + lstm.MODEL_FILE)
        _copy(args["vocab_path"], staging + "/" + lstm.VOCAB_FILE)
        sfs, spath = hvd_train.filesystem(staging + "/" + lstm.CONFIG_FILE)
        with sfs.open_output_stream(spath) as out:
            out.write(json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str).encode())
        box["eval"] = _evaluate(cfg, staging + "/" + lstm.MODEL_FILE, args["seq_dir"])
        r0 = rank_results[0]
        ranks = [{k: v for k, v in r.items() if k != "review_ids"} for r in rank_results]
        box["ranks"] = rank_results
        return {
            "workers": r0["size"], "launcher": cfg.train.launcher,
            "steps_per_epoch": r0["steps_per_epoch"], "initial_epoch": r0["initial_epoch"],
            "epochs_run": r0["epochs_run"], "epochs_completed": r0["epochs_completed"],
            "stopped_early": r0["stopped_early"], "best_epoch": r0["best_epoch"],
            "rows_seen": sum(r["rows_seen"] for r in rank_results),
            "train_rows": args["train_rows"], "validation_rows": args["val_rows"],
            "test_rows": int(box["eval"]["pred"]["label"].size),
            "class_weights": args["class_weights"], "learning_rate": r0["learning_rate"],
            "samples_per_s": r0["samples_per_s"], "fit_seconds": r0["train_seconds"],
            "train_wall_seconds": round(train_seconds, 3),
            "predict_seconds": box["eval"]["predict_seconds"],
            "history": r0["history"], "cudnn": r0["cudnn"], "ranks": ranks,
            "test": {k: v for k, v in box["eval"]["summary"].items()},
            "test_ci": box["eval"]["ci"],
        }

    manifest = storage.run_stage(spark, stage=STAGE, output=p["output"], config_hash=chash,
                                 config=cfg.to_dict(), upstream={p["encode"]: "encode"},
                                 force=force, write=write)
    if manifest.get("skipped"):
        return {"output": p["output"], "skipped": True}
    ev = box["eval"]
    row = {"model": "lstm", "engine": f"horovod-{cfg.train.launcher}", "tag": cfg.sample_tag(),
           "sample_size": cfg.sample.size, "sample_method": cfg.sample.method, "stage": STAGE,
           **metrics.metric_columns(ev["summary"], ev["ci"]),
           "workers": manifest["workers"], "epochs_run": manifest["epochs_run"],
           "epochs_completed": manifest["epochs_completed"], "best_epoch": manifest["best_epoch"],
           "stopped_early": manifest["stopped_early"], "rows_seen": manifest["rows_seen"],
           "samples_per_s": manifest["samples_per_s"], "fit_seconds": manifest["fit_seconds"],
           "train_wall_seconds": manifest["train_wall_seconds"],
           "predict_seconds": manifest["predict_seconds"], "steps_per_epoch": manifest["steps_per_epoch"],
           "model_path": p["output"], "lstm": cfg.to_dict()["lstm"], "train": cfg.to_dict()["train"],
           "encode": {"vocab_size": cfg.encode.vocab_size, "max_len": cfg.encode.max_len,
                      "shards": cfg.encode.shards}, "seed": cfg.run.seed}
    written = results.append_result(p["results"], row)
    pred_path = results.save_predictions(p["results"], written["run_id"], ev["pred"]["review_id"],
                                         ev["pred"]["label"], ev["y_pred"], ev["pred"]["proba"])
    return {"output": p["output"], "skipped": False, "run_id": written["run_id"],
            "predictions": pred_path, "score": ev["summary"]["score"],
            "accuracy": ev["summary"]["accuracy"], "macro_f1": ev["summary"]["macro_f1"],
            **{k: manifest[k] for k in ("workers", "epochs_run", "epochs_completed", "initial_epoch",
                                        "stopped_early", "rows_seen", "samples_per_s",
                                        "fit_seconds", "history", "ranks")},
            "review_ids": {r["rank"]: r.get("review_ids") for r in box["ranks"]}
            if (hooks or {}).get("return_ids") else None}
