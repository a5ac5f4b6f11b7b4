"""The per-rank LSTM training function, the same under horovod.spark.run, horovodrun and local.

``train_rank(args)`` takes one ``RankArgs`` (plain values and the frozen lstm/train config
sections), so it pickles into a Spark task; under horovodrun it arrives as JSON
(``RankArgs.to_json`` / ``from_json``, read by ``python -m starscale.hvd_train ARGS.json``).
Horovod pickles the function by reference: it stays at module level here.

One rank, in order (each a function below): set up the device and seeds → read and broadcast
the checkpoint state → build the model and its distributed optimizer → restore and broadcast
weights → build the inputs and callbacks → fit → summarise (rank 0 saves final.keras).
Each rank streams its own Parquet shards through tf.data; rank 0 alone writes checkpoints.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starscale import storage
from starscale.config import LSTMConfig, TrainConfig, section_from_dict
from starscale.training import checkpoints, data
from starscale.training.hooks import TrainHooks
from starscale.training.watchdog import FAILURE_EXIT_CODE, Stalled, TrainingFailed, Watchdog


@dataclass(frozen=True)
class RankArgs:
    """Everything a rank needs. train_rows / val_rows: {shard: rows} as the driver counted them;
    class_weights: 5 floats (label 0..4); fingerprint: config + input identity of the checkpoint."""
    lstm: LSTMConfig
    train: TrainConfig
    seed: int
    seq_dir: str
    vocab_path: str
    vocab_size: int
    max_len: int
    train_rows: dict[int, int]
    val_rows: dict[int, int]
    class_weights: list[float]
    ckpt_dir: str
    fingerprint: str
    hooks: TrainHooks = field(default_factory=TrainHooks)
    hard_exit: bool = True
    attempt: str = ""            # this launch's id: names its failure marker (checkpoints)

    def to_json(self) -> dict[str, Any]:
        """The JSON form horovodrun's ranks read (bench/lstm_common.py writes the same)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("lstm", "train", "seed", "hooks")}
        out.update(config={"lstm": dataclasses.asdict(self.lstm),
                           "train": dataclasses.asdict(self.train), "run": {"seed": self.seed}},
                   train_rows={str(k): v for k, v in self.train_rows.items()},
                   val_rows={str(k): v for k, v in self.val_rows.items()},
                   hooks=self.hooks.to_dict())
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "RankArgs":
        cfg = raw["config"]
        return cls(lstm=section_from_dict(LSTMConfig, cfg["lstm"], "lstm"),
                   train=section_from_dict(TrainConfig, cfg["train"], "train"),
                   seed=int(cfg["run"]["seed"]), seq_dir=raw["seq_dir"],
                   vocab_path=raw["vocab_path"], vocab_size=int(raw["vocab_size"]),
                   max_len=int(raw["max_len"]),
                   train_rows={int(k): int(v) for k, v in raw["train_rows"].items()},
                   val_rows={int(k): int(v) for k, v in raw["val_rows"].items()},
                   class_weights=[float(w) for w in raw["class_weights"]],
                   ckpt_dir=raw["ckpt_dir"], fingerprint=raw["fingerprint"],
                   hooks=TrainHooks.from_dict(raw.get("hooks")),
                   hard_exit=bool(raw.get("hard_exit", True)),
                   attempt=str(raw.get("attempt", "")))


def train_rank(args: RankArgs) -> dict[str, Any]:
    """Train on this rank's shards; return this rank's summary (rank 0 also saves final.keras).
    A failure is recorded in the checkpoint folder (_FAILURE.json) for the driver."""
    try:
        return _train_rank(args)
    except BaseException as exc:
        if not isinstance(exc, TrainingFailed):
            # Horovod's launchers report only "a process failed": leave the reason for the driver.
            try:
                import horovod.tensorflow.keras as hvd
                rank = hvd.rank() if hvd.is_initialized() else -1
            except Exception:                # noqa: BLE001
                rank = -1
            try:
                checkpoints.write_failure(args.ckpt_dir, f"rank {rank}: {type(exc).__name__}: {exc}",
                                          rank, args.attempt)
            except Exception:                # noqa: BLE001
                pass
        if args.hard_exit:
            exit_now(args.hooks)
        raise


def exit_now(hooks: TrainHooks) -> None:
    """A failed worker process exits here, without unwinding. Unwinding drops the last reference
    to the tf.data iterator, whose destructor waits for its prefetch thread; that thread may be
    inside the Python generator waiting for the GIL this thread holds: a deadlock, seen after a
    peer rank's worker was killed (the rank never exited, so the launcher never returned)."""
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    if hooks.hang_on_failure:
        # Test hook: stand in for that deadlock (a failed rank that never exits), so the
        # driver's failure watch (train.failure_grace_s) can be tested.
        while True:
            time.sleep(3600)
    os._exit(FAILURE_EXIT_CODE)


def _train_rank(args: RankArgs) -> dict[str, Any]:
    """The watchdog runs from the first step: a hang in Horovod's init (a peer that never
    comes), a broadcast or the checkpoint load fails the run like a hang in fit. Until fit it
    allows the longer of train.start_timeout_s and train.stall_timeout_s."""
    watchdog = Watchdog(max(args.train.stall_timeout_s, args.train.start_timeout_s),
                        hard_exit=args.hard_exit, where="rank ? (before Horovod init)",
                        on_stall=lambda msg: checkpoints.write_failure(
                            args.ckpt_dir, msg, getattr(watchdog, "rank", -1), args.attempt))
    if args.train.start_timeout_s > args.train.stall_timeout_s:
        watchdog.setting = "train.start_timeout_s"
    watchdog.beat("horovod init")
    watchdog.start()
    try:
        return _train_rank_watched(args, watchdog)
    except Stalled:
        raise TrainingFailed(f"{watchdog.where}: {watchdog.fired}") from None
    finally:
        watchdog.stop()


def _train_rank_watched(args: RankArgs, watchdog: Watchdog) -> dict[str, Any]:
    rank, size, placements = setup_devices(args)
    watchdog.rank, watchdog.where = rank, f"rank {rank}/{size}"
    watchdog.beat("plan inputs")
    inputs = plan_inputs(args, rank, size)
    watchdog.beat("read and broadcast the checkpoint state")
    state = restore_state(args, rank)
    watchdog.beat("build the model")
    model, learning_rate = build_model(args, rank, size)
    watchdog.beat("load and broadcast the checkpoint weights")
    best_weights = restore_weights(args, model, state, rank)
    seen_ids: set | None = set() if args.hooks.return_ids else None
    start_epoch = int(state["completed_epochs"]) if state else 0
    train_ds = data.train_dataset(
        inputs["train_files"], args.seq_dir, batch_size=args.lstm.batch_size,
        steps=inputs["steps"], start_epoch=start_epoch, seed=args.seed, rank=rank,
        shuffle_buffer=args.lstm.shuffle_buffer, class_weights=args.class_weights,
        max_len=args.max_len, nan_at_step=args.hooks.nan_at_step, seen_ids=seen_ids)
    val_ds = data.eval_dataset(inputs["val_files"], args.seq_dir, max_len=args.max_len,
                               batch_size=args.lstm.batch_size)
    watchdog.timeout_s = float(args.train.stall_timeout_s)    # from here on: batches
    watchdog.setting = "train.stall_timeout_s"
    watchdog.beat("build the inputs and callbacks")
    callbacks, best = make_callbacks(args, rank, size, inputs["steps"], learning_rate, state,
                                     best_weights, watchdog, val_ds)
    epochs = planned_epochs(args.lstm.epochs, args.lstm.min_steps, inputs["steps"])
    fitted = fit(model, train_ds, callbacks, best, watchdog, state=state, rank=rank,
                 steps=inputs["steps"], epochs=epochs)
    rows_seen = fitted["ran_epochs"] * inputs["steps"] * args.lstm.batch_size
    seconds = fitted["seconds"]
    from starscale import lstm
    result = {
        "rank": rank, "size": size, "train_shards": inputs["my_train"],
        "val_shards": inputs["my_val"], "steps_per_epoch": inputs["steps"],
        "initial_epoch": start_epoch, "epochs_run": fitted["ran_epochs"],
        "epochs_completed": start_epoch + fitted["ran_epochs"],
        "stopped_early": best.stopped or fitted["stopped_before"],
        "epochs_planned": epochs, "best_epoch": best.best_epoch, "monitor": best.monitor,
        "best_value": best.best_value(),
        "rows_seen": rows_seen, "train_seconds": round(seconds, 3),
        "samples_per_s": round(rows_seen * size / seconds, 1) if seconds > 0 and rows_seen else None,
        "history": fitted["history"], "checksum": lstm.weights_checksum(model),
        "learning_rate": learning_rate, "cudnn": lstm.uses_cudnn(model),
        "placement": placements[rank],
    }
    if seen_ids is not None:
        result["review_ids"] = sorted(seen_ids)
    if rank == 0:
        checkpoints.save_final(args.ckpt_dir, model, args.lstm)
    return result


def planned_epochs(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """lstm.epochs, raised so that training takes at least lstm.min_steps optimizer steps
    (small cells would otherwise stop after a few dozen steps: under-trained, not data-starved).
    Early stopping still ends a run whose validation score stops improving."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps per epoch must be >= 1, got {steps_per_epoch}")
    return max(int(epochs), -(-int(min_steps) // int(steps_per_epoch)))


# --------------------------------------------------------------------------- the steps
def setup_devices(args: RankArgs) -> tuple[int, int, list[dict]]:
    """Horovod up, this rank's GPU (or none), seeds and op determinism → (rank, size, every
    rank's placement)."""
    import tensorflow as tf
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    from tensorflow import keras
    from starscale.training import devices

    # Horovod: one process per worker; ranks talk over Gloo (NCCL for GPU allreduce when built).
    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    # Horovod: GPU gradients go through NCCL; a build without it would copy them via the host
    # (the GPU drill keeps TF on the CPU: no GPU gradients).
    devices.check_nccl(args.train.use_gpu and not args.train.gpu_drill, hvd.nccl_built(),
                       f"rank {rank}/{size}")
    # Horovod: one GPU per process, the one Spark gave this rank's task (horovod.spark.run), else
    # the local rank's (horovodrun); no GPU visible when train.use_gpu is off.
    choice = devices.pin_gpu(args.train.use_gpu, local_rank, f"rank {rank}/{size}",
                             drill=args.train.gpu_drill, handed=args.hooks.gpu_address)
    # Horovod: every rank learns where every rank runs; no two may share a (host, GPU) pair, and
    # rank 0 leaves the placement for the driver (a lost peer is named by host and rank).
    placements = hvd_tf.allgather_object(placement(rank, choice), name="placement")
    if rank == 0:
        checkpoints.write_placement(args.ckpt_dir, placements, args.attempt)
    if args.train.use_gpu:
        devices.check_unique_gpus(placements)
    keras.utils.set_random_seed(args.seed)
    if args.lstm.deterministic:
        tf.config.experimental.enable_op_determinism()
    return rank, size, placements


def placement(rank: int, choice) -> dict[str, Any]:
    """Where this rank runs: host name, its address on Horovod's Gloo interface, the GPU it
    took (Spark's address, or None on CPU), the interpreter and where starscale came from."""
    import socket
    import starscale
    iface = os.environ.get("HOROVOD_GLOO_IFACE")
    address = None
    if iface:
        from starscale import loopback
        try:
            address = loopback.resolve_host(f"iface:{iface}")
        except ValueError:
            address = None
    gpu = choice.address if choice.address is not None else (
        None if choice.index is None else str(choice.index))
    return {"rank": rank, "host": socket.gethostname(), "address": address, "iface": iface,
            "rendezvous": os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"), "gpu": gpu,
            "device": choice.describe(), "python": sys.executable,
            "starscale": os.path.dirname(os.path.abspath(starscale.__file__)), "pid": os.getpid()}


def plan_inputs(args: RankArgs, rank: int, size: int) -> dict[str, Any]:
    """Steps per epoch and this rank's train / validation shards and files."""
    steps = data.steps_per_epoch(args.train_rows, size, args.lstm.batch_size)
    my_train = data.assign_shards(list(args.train_rows), rank, size, "train")
    my_val = data.validation_shards(args.val_rows, rank, size)
    return {"steps": steps, "my_train": my_train, "my_val": my_val,
            "train_files": data.files_of(args.seq_dir, "train", my_train),
            "val_files": data.files_of(args.seq_dir, "validation", my_val)}


def restore_state(args: RankArgs, rank: int) -> dict | None:
    """Rank 0 reads the checkpoint state (ignored when its fingerprint is another run's); every
    rank gets the same decision."""
    import horovod.tensorflow as hvd_tf
    state = None
    if rank == 0:
        state = checkpoints.read_state(args.ckpt_dir)
        if state is not None and state.get("fingerprint") != args.fingerprint:
            print(f"starscale train: checkpoint in {args.ckpt_dir} is for another config or "
                  f"input; starting fresh", file=sys.stderr)
            state = None
    return hvd_tf.broadcast_object(state, root_rank=0, name="ckpt_state")


def architecture(args: RankArgs) -> dict:
    """lstm.build_model's arguments that shape the model: what a bundle's model.json holds, so
    a saved model is rebuilt by the same code (lstm.model_from_bytes)."""
    lcfg = args.lstm
    return {"vocab_size": args.vocab_size, "max_len": args.max_len,
            "embedding_dim": lcfg.embedding_dim, "units": lcfg.units, "layers": lcfg.layers,
            "bidirectional": lcfg.bidirectional, "spatial_dropout": lcfg.spatial_dropout,
            "dropout": lcfg.dropout, "recurrent_dropout": lcfg.recurrent_dropout,
            "mixed_precision": lcfg.mixed_precision,
            "embedding_trainable": lcfg.embedding_trainable}


def build_model(args: RankArgs, rank: int, size: int):
    """The compiled model with Horovod's distributed optimizer → (model, learning rate)."""
    import horovod.tensorflow.keras as hvd
    from starscale import lstm
    from starscale.training import devices
    lcfg = args.lstm
    if args.train.use_gpu:
        devices.check_cudnn_eligible(lcfg)   # before the vectors are read: fail fast
    matrix = None
    if lcfg.pretrained_vectors and rank == 0:
        # Only rank 0 reads the vectors: its weights are broadcast to every rank below.
        matrix = pretrained_matrix(lcfg.pretrained_vectors, args.vocab_path, lcfg.embedding_dim,
                                   args.seed)
    model = lstm.build_model(**architecture(args), embedding_matrix=matrix, seed=args.seed)
    if args.train.use_gpu:
        devices.check_model_cudnn(model)
    # Horovod: the effective batch is batch_size × size; the rate follows it (scaled_learning_rate).
    learning_rate = scaled_learning_rate(lcfg.learning_rate, lcfg.learning_rate_batch,
                                         lcfg.batch_size * size, args.train.scale_lr)
    # Horovod: the distributed optimizer averages gradients across ranks with allreduce.
    # sparse_as_dense: the embedding's gradient (IndexedSlices, batch × max_len rows of 300) is
    # allreduced as one dense vocab × 300 tensor instead of allgathered as slices from every
    # rank: smaller than the slices once batch × max_len × ranks > vocab, and one NCCL allreduce
    # (docs/training.md "Throughput").
    optimizer = hvd.DistributedOptimizer(lstm.make_optimizer(learning_rate, lcfg.clipnorm),
                                         sparse_as_dense=True)
    lstm.compile_model(model, optimizer, mixed_precision=lcfg.mixed_precision)
    model.optimizer.build(model.trainable_variables)
    return model, learning_rate


def scaled_learning_rate(learning_rate: float, learning_rate_batch: int, effective_batch: int,
                         scale: bool) -> float:
    """Adam's rate for effective_batch rows per optimizer step (all ranks): learning_rate, set for
    learning_rate_batch rows, × √(effective_batch / learning_rate_batch) when scale
    (train.scale_lr), else learning_rate. Square-root scaling is the rule for Adam (linear
    scaling, Horovod's lr × size, is SGD's: for Adam it overshoots at large batches)."""
    if not scale:
        return float(learning_rate)
    return float(learning_rate) * math.sqrt(effective_batch / learning_rate_batch)


def restore_weights(args: RankArgs, model, state: dict | None, rank: int):
    """Resume: rank 0 loads the checkpoint's weights and optimizer state; then every rank
    starts from rank 0's variables. → the best weights so far (None when fresh)."""
    import horovod.tensorflow as hvd_tf
    best_weights = None
    if state:
        if rank == 0:
            loaded, best_weights = checkpoints.load_checkpoint(args.ckpt_dir, state)
            model.set_weights(loaded.get_weights())
            checkpoints.set_optimizer_state(model, loaded)
        best_weights = hvd_tf.broadcast_object(best_weights, root_rank=0, name="best_weights")
    # Horovod: start every rank from rank 0's weights and optimizer state (fresh or resumed).
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    hvd_tf.broadcast_variables(model.optimizer.variables, root_rank=0)
    return best_weights


def make_callbacks(args: RankArgs, rank: int, size: int, steps: int, learning_rate: float,
                   state: dict | None, best_weights, watchdog: Watchdog, val_ds=None):
    """The Keras callbacks in the order they must run → (callbacks, the early-stopping one)."""
    import horovod.tensorflow.keras as hvd
    from starscale.training import callbacks as cb
    tcfg = args.train
    progress = cb.Progress(watchdog)
    best = cb.BestWeights(args.lstm.early_stopping_patience, state, best_weights,
                          monitor=args.lstm.monitor)
    callbacks = [
        # Horovod: rank 0's variables everywhere after the first batch (a no-op here since we
        # broadcast before fit, kept so optimizer slots created lazily are in sync too).
        cb.tf_batch_logs(hvd.callbacks.BroadcastGlobalVariablesCallback(0)),
        # Horovod: average epoch metrics (loss, accuracy) over ranks before anything reads them
        # (the validation metrics are combined over ranks by callbacks.ValidationScore).
        hvd.callbacks.MetricAverageCallback(),
    ]
    if tcfg.scale_lr and tcfg.warmup_epochs > 0 and learning_rate > args.lstm.learning_rate:
        # Large-batch warmup: from lstm.learning_rate up to the scaled rate over the first
        # epochs (in place of Horovod's LearningRateWarmupCallback, which reads the rate back
        # from the device every batch).
        callbacks.append(cb.WarmupLR(args.lstm.learning_rate, learning_rate, tcfg.warmup_epochs,
                                     steps))
    callbacks += [cb.ReseedDropout(args.seed, rank), progress,
                  cb.NanGuard(rank, args.ckpt_dir, lambda: progress.epoch, attempt=args.attempt),
                  # the validation metrics, before early stopping and the checkpoint read them
                  cb.ValidationScore(val_ds, watchdog, lambda: progress.epoch), best,
                  cb.Checkpointer(rank, args.ckpt_dir, args.fingerprint, args.lstm, best,
                                  state.get("history") if state else None)]
    if args.hooks.epoch_sleep_s:
        callbacks.append(cb.Sleep(float(args.hooks.epoch_sleep_s), watchdog))
    from starscale.training import tensorboard
    board = tensorboard.callback(args.ckpt_dir, rank)      # rank 0: epoch scalars
    return callbacks + ([board] if board is not None else []), best


def fit(model, train_ds, callbacks, best, watchdog: Watchdog, *, state: dict | None,
        rank: int, steps: int, epochs: int) -> dict[str, Any]:
    """model.fit from the checkpoint's epoch under the watchdog (or only the best weights when
    the checkpoint says training is over) → history, epochs run, seconds."""
    start_epoch = int(state["completed_epochs"]) if state else 0
    started = time.time()
    history: dict[str, list] = dict(state.get("history", {})) if state else {}
    stopped_before = bool(state and state.get("stopped"))
    ran_epochs = 0
    watchdog.beat("fit start")
    try:
        if start_epoch < epochs and not stopped_before:
            fitted = model.fit(train_ds, steps_per_epoch=steps, epochs=epochs,
                               initial_epoch=start_epoch,
                               # Horovod: Keras progress from rank 0 only (one line per epoch)
                               callbacks=callbacks, verbose=2 if rank == 0 else 0)
            for key, vals in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in vals)
            ran_epochs = len(fitted.history.get("loss", []))
        elif best.best_weights is not None:
            model.set_weights(best.best_weights)
    except Stalled:
        raise TrainingFailed(f"rank {rank}: {watchdog.fired}") from None
    finally:
        watchdog.stop()
    return {"history": history, "ran_epochs": ran_epochs, "stopped_before": stopped_before,
            "seconds": time.time() - started}


def pretrained_matrix(vectors_path: str, vocab_path: str, dim: int, seed: int) -> np.ndarray:
    """The embedding matrix from a GloVe/fastText text file (local files streamed line by line)."""
    from starscale import lstm
    vocab = lstm.read_vocab(storage.read_bytes(vocab_path).decode("utf-8").splitlines())
    local = storage.local_path(vectors_path)
    if local is not None:
        if not os.path.isfile(local):
            raise ValueError(f"lstm.pretrained_vectors: file not found: {vectors_path}")
        with open(local, encoding="utf-8", errors="replace") as fh:
            matrix, _ = lstm.read_vectors(fh, vocab, dim, seed, source=vectors_path)
        return matrix
    text = io.TextIOWrapper(io.BytesIO(storage.read_bytes(vectors_path)), encoding="utf-8",
                            errors="replace")
    matrix, _ = lstm.read_vectors(text, vocab, dim, seed, source=vectors_path)
    return matrix
