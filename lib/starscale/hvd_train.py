"""The per-rank LSTM training function, the same under horovod.spark.run, horovodrun and local.

``train_rank(args)`` takes only plain values (the config as a dict, paths, shard row counts), so
it pickles into a Spark task and reads from a JSON file under horovodrun
(``python -m starscale.hvd_train ARGS.json``). Each rank streams its own Parquet shards through
tf.data; rank 0 alone writes checkpoints and the final model.

Checkpoint folder (shared storage every rank's host can reach; local disk in local mode):
``epoch-NNNN.keras`` (model + optimizer), ``best.weights.npz`` (early stopping's best weights),
``state.json`` (written last: completed epochs, early-stopping state, history, fingerprint),
``final.keras`` (the trained model with best weights restored) and ``_FAILURE.json`` (why a rank
failed, read by the driver to name the cause in its error).
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

import numpy as np

STATE_FILE = "state.json"
BEST_FILE = "best.weights.npz"
FINAL_FILE = "final.keras"
FAILURE_FILE = "_FAILURE.json"
STALL_EXIT_CODE = 75
FAILURE_EXIT_CODE = 1
COLUMNS = ["review_id", "label", "weight", "ids"]


class TrainingFailed(RuntimeError):
    """A NaN loss or a stall: the message names where it happened."""


class Stalled(TrainingFailed):
    """Raised in the training thread by the watchdog (local mode)."""


# --------------------------------------------------------------------------- files (pyarrow fs)
def filesystem(path: str):
    """(pyarrow FileSystem, path inside it) for a local path or a URI (hdfs://, s3://)."""
    from pyarrow import fs as pafs
    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path.removeprefix("file://"))


def list_shards(seq_dir: str, split: str) -> dict[int, list[str]]:
    """{shard: sorted Parquet files} under <seq_dir>/split=<split>/shard=<k>/ (empty if none)."""
    from pyarrow import fs as pafs
    fs, root = filesystem(seq_dir)
    base = f"{root}/split={split}"
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return {}
    shards: dict[int, list[str]] = {}
    for info in fs.get_file_info(pafs.FileSelector(base)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith("shard="):
            continue
        files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
                       if f.type == pafs.FileType.File and not f.base_name.startswith(("_", "."))
                       and not any(p.startswith((".", "_")) for p in f.path[len(info.path):].split("/") if p))
        shards[int(name.split("=", 1)[1])] = files
    return dict(sorted(shards.items()))


def count_rows(files: list[str], seq_dir: str) -> int:
    """Rows in Parquet files, read from their footers only."""
    import pyarrow.parquet as pq
    fs, _ = filesystem(seq_dir)
    return sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)


def assign_shards(shards: list[int], rank: int, size: int, split: str = "train") -> list[int]:
    """Shards of one rank: rank, rank+size, … of the sorted shard ids (shards ≥ workers)."""
    if len(shards) < size:
        raise ValueError(f"{split}: {len(shards)} shard(s) for {size} Horovod workers; set "
                         f"encode.shards >= train.workers (re-run encode) or lower train.workers")
    ordered = sorted(shards)
    return [ordered[i] for i in range(rank, len(ordered), size)]


def steps_per_epoch(train_rows: dict[int, int], size: int, batch_size: int) -> int:
    """Steps every rank runs per epoch: the smallest rank's full batches, so no rank waits on a
    collective that another rank never reaches (a rank's leftover rows are skipped that epoch)."""
    per_rank = [sum(train_rows[s] for s in assign_shards(list(train_rows), r, size))
                for r in range(size)]
    steps = min(per_rank) // batch_size
    if steps < 1:
        raise ValueError(f"train: the smallest rank has {min(per_rank)} rows, fewer than one "
                         f"batch (lstm.batch_size={batch_size})")
    return steps


def _read_table_batches(files: list[str], fs, chunk_rows: int, order: np.ndarray | None = None):
    """(review_id, label, weight, ids) numpy chunks, one Parquet record batch at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    for i in (order if order is not None else range(len(files))):
        pf = pq.ParquetFile(files[i], filesystem=fs)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=COLUMNS):
            ids_col = batch.column("ids")
            flat = pc.list_flatten(ids_col).to_numpy(zero_copy_only=False)
            n = batch.num_rows
            if n and flat.size % n:
                raise ValueError(f"{files[i]}: ids arrays have unequal lengths (expected encode.max_len each)")
            yield (np.asarray(batch.column("review_id").to_pylist(), dtype=object),
                   batch.column("label").to_numpy(zero_copy_only=False).astype(np.int64),
                   batch.column("weight").to_numpy(zero_copy_only=False).astype(np.float32),
                   flat.astype(np.int32).reshape(n, -1) if n else np.zeros((0, 0), np.int32))


def validation_shards(val_rows: dict[int, int], rank: int, size: int) -> list[int]:
    """Validation shards of one rank: split like train when every rank then gets rows, else all
    of them on every rank (the same choice on every rank, so the averaged metrics line up)."""
    shards = sorted(s for s, n in val_rows.items() if n > 0)
    if not shards:
        return []
    if len(shards) >= size and all(assign_shards(shards, r, size) for r in range(size)):
        return assign_shards(shards, rank, size, "validation")
    return shards


def train_batches(files: list[str], seq_dir: str, *, batch_size: int, steps: int, start_epoch: int,
                  seed: int, rank: int, shuffle_buffer: int, class_weights: list[float],
                  max_len: int, nan_at_step: int | None = None,
                  seen_ids: set | None = None) -> Iterator[tuple]:
    """Endless (ids, one-hot labels, sample weights) batches: exactly `steps` per epoch.

    Shuffling is a seeded buffer shuffle keyed on (seed, rank, epoch): epoch k's batches are the
    same whether the run started at epoch 0 or resumed at k. Only the buffer is in memory.
    sample weight = class weight of the label × the table's weight column.
    """
    fs, _ = filesystem(seq_dir)
    cw = np.asarray(class_weights, dtype=np.float32)
    eye = np.eye(len(class_weights), dtype=np.float32)
    epoch = start_epoch
    while True:
        rng = np.random.default_rng([seed, rank, epoch])
        order = rng.permutation(len(files)) if shuffle_buffer > 0 else None
        emitted = 0
        buf: list[tuple] = []
        buffered = 0
        target = max(shuffle_buffer, batch_size)

        def drain(final: bool):
            """Shuffle the buffer; hand out whole batches, keeping about half back (so rows mix
            across record batches) unless this is the end of the files."""
            nonlocal buf, buffered
            rid, lab, wt, ids = (np.concatenate([b[k] for b in buf]) for k in range(4))
            if shuffle_buffer > 0:
                perm = rng.permutation(len(lab))
                rid, lab, wt, ids = rid[perm], lab[perm], wt[perm], ids[perm]
            full = (len(lab) // batch_size) * batch_size
            cut = full if final else max(((len(lab) // 2) // batch_size) * batch_size,
                                         min(batch_size, full))
            buf = [] if final else [(rid[cut:], lab[cut:], wt[cut:], ids[cut:])]
            buffered = 0 if final else len(lab) - cut
            return rid[:cut], lab[:cut], wt[:cut], ids[:cut]

        def emit(chunk):
            nonlocal emitted
            rid, lab, wt, ids = chunk
            for start in range(0, len(lab), batch_size):
                if emitted >= steps:
                    return
                if ids.shape[1] != max_len:
                    raise ValueError(f"{seq_dir}: ids have length {ids.shape[1]}, expected "
                                     f"encode.max_len={max_len}")
                sl = slice(start, start + batch_size)
                weights = cw[lab[sl]] * wt[sl]
                emitted += 1
                if nan_at_step is not None and epoch * steps + emitted == nan_at_step:
                    weights = np.full_like(weights, np.nan)   # test hook: a NaN loss at this step
                if seen_ids is not None:
                    seen_ids.update(rid[sl].tolist())
                yield ids[sl], eye[lab[sl]], weights

        for chunk in _read_table_batches(files, fs, max(batch_size, 1024), order):
            if emitted >= steps:
                break
            if len(chunk[1]) == 0:
                continue
            buf.append(chunk)
            buffered += len(chunk[1])
            if buffered >= target:
                yield from emit(drain(final=False))
        if emitted < steps and buf:
            yield from emit(drain(final=True))
        if emitted < steps:
            raise ValueError(f"{seq_dir}: rank {rank} ran out of rows after {emitted} of {steps} "
                             f"batches (shard row counts changed since the driver counted them?)")
        epoch += 1


def eval_batches(files: list[str], seq_dir: str, batch_size: int, n_classes: int = 5):
    """Finite (ids, one-hot labels) batches over files in order (validation: unweighted)."""
    fs, _ = filesystem(seq_dir)
    eye = np.eye(n_classes, dtype=np.float32)
    for _rid, lab, _wt, ids in _read_table_batches(files, fs, max(batch_size, 1024)):
        for start in range(0, len(lab), batch_size):
            sl = slice(start, start + batch_size)
            yield ids[sl], eye[lab[sl]]


def batch_signature(max_len: int) -> tuple:
    """tf.data signature of train_batches' (ids, one-hot labels, sample weights)."""
    import tensorflow as tf
    return (tf.TensorSpec((None, max_len), tf.int32), tf.TensorSpec((None, 5), tf.float32),
            tf.TensorSpec((None,), tf.float32))


def train_dataset(files: list[str], seq_dir: str, *, max_len: int, **batches: Any):
    """A rank's training input: train_batches(files, seq_dir, max_len=…, **batches) as a
    tf.data Dataset, two batches prefetched (bench/input_pipeline.py measures this same one)."""
    import tensorflow as tf
    return tf.data.Dataset.from_generator(
        lambda: train_batches(files, seq_dir, max_len=max_len, **batches),
        output_signature=batch_signature(max_len)).prefetch(2)


# --------------------------------------------------------------------------- watchdog
class Watchdog:
    """Fails the run when no batch completes for `timeout_s`: a hang becomes a failure.

    hard_exit (worker processes): print the reason and os._exit, which the launcher reports as a
    failed rank. Otherwise (in-process local mode) raise Stalled in the thread that started the
    watchdog (an asynchronous exception: it does not depend on whoever owns the SIGINT handler,
    Spark and Horovod both install one), and exit hard only if that thread is still stuck in
    native code after another timeout.
    """

    def __init__(self, timeout_s: float, hard_exit: bool, where: str, on_stall=None):
        self.timeout_s = float(timeout_s)
        self.hard_exit = hard_exit
        self.where = where
        self.on_stall = on_stall
        self.last = time.monotonic()
        self.position = "start"
        self.fired: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="starscale-watchdog", daemon=True)
        self._target = threading.get_ident()

    def start(self) -> "Watchdog":
        self.last = time.monotonic()
        self._target = threading.get_ident()
        self._thread.start()
        return self

    def beat(self, position: str) -> None:
        self.last = time.monotonic()
        self.position = position

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        import ctypes
        tick = min(5.0, max(0.2, self.timeout_s / 10))
        while not self._stop.wait(tick):
            idle = time.monotonic() - self.last
            if idle < self.timeout_s:
                continue
            self.fired = (f"no batch completed for {idle:.0f}s (train.stall_timeout_s="
                          f"{self.timeout_s:g}) on {self.where}, last progress: {self.position}")
            print(f"starscale train: STALL: {self.fired}", file=sys.stderr, flush=True)
            if self.on_stall:
                try:
                    self.on_stall(self.fired)
                except Exception:            # noqa: BLE001 — failing is what matters here
                    pass
            if self.hard_exit:
                os._exit(STALL_EXIT_CODE)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                       ctypes.py_object(Stalled))
            if not self._stop.wait(self.timeout_s):
                os._exit(STALL_EXIT_CODE)
            return


# --------------------------------------------------------------------------- checkpoint i/o
def _put_bytes(fs, path: str, data: bytes) -> None:
    """Write a file atomically: a temp name in the same folder, then a rename over the target."""
    tmp = f"{path.rsplit('/', 1)[0]}/.tmp-{os.getpid()}-{path.rsplit('/', 1)[1]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def _get_bytes(fs, path: str) -> bytes | None:
    from pyarrow import fs as pafs
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as src:
        return src.read()


def _model_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _load_model_bytes(data: bytes, compile: bool = True):
    from tensorflow import keras
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        with open(path, "wb") as fh:
            fh.write(data)
        return keras.models.load_model(path, safe_mode=True, compile=compile)


def read_state(ckpt_dir: str) -> dict | None:
    fs, root = filesystem(ckpt_dir)
    data = _get_bytes(fs, f"{root}/{STATE_FILE}")
    return json.loads(data) if data else None


def read_failure(ckpt_dir: str) -> dict | None:
    fs, root = filesystem(ckpt_dir)
    data = _get_bytes(fs, f"{root}/{FAILURE_FILE}")
    return json.loads(data) if data else None


def clear_failure(ckpt_dir: str) -> None:
    fs, root = filesystem(ckpt_dir)
    fs.create_dir(root, recursive=True)
    try:
        fs.delete_file(f"{root}/{FAILURE_FILE}")
    except (FileNotFoundError, OSError):
        pass


def clear_checkpoints(ckpt_dir: str) -> None:
    """Forget earlier progress: the next run starts at epoch 0."""
    fs, root = filesystem(ckpt_dir)
    fs.create_dir(root, recursive=True)
    fs.delete_dir_contents(root, missing_dir_ok=True)


def _write_failure(ckpt_dir: str, message: str, rank: int) -> None:
    fs, root = filesystem(ckpt_dir)
    _put_bytes(fs, f"{root}/{FAILURE_FILE}",
               json.dumps({"rank": rank, "message": message}).encode())


def _pretrained_matrix(vectors_path: str, vocab_path: str, dim: int, seed: int) -> np.ndarray:
    """The embedding matrix from a GloVe/fastText text file, streamed line by line."""
    from starscale import lstm
    vocab = lstm.read_vocab(_get_bytes(*filesystem(vocab_path)).decode("utf-8").splitlines())
    local = None if "://" in vectors_path and not vectors_path.startswith("file://") \
        else vectors_path.removeprefix("file://")
    if local is not None:
        if not os.path.isfile(local):
            raise ValueError(f"lstm.pretrained_vectors: file not found: {vectors_path}")
        with open(local, encoding="utf-8", errors="replace") as fh:
            matrix, _ = lstm.read_vectors(fh, vocab, dim, seed, source=vectors_path)
        return matrix
    vfs, vpath = filesystem(vectors_path)
    with vfs.open_input_stream(vpath) as src:
        text = io.TextIOWrapper(io.BytesIO(src.read()), encoding="utf-8", errors="replace")
        matrix, _ = lstm.read_vectors(text, vocab, dim, seed, source=vectors_path)
    return matrix


def _plain_copy(model, lcfg: dict):
    """The model with a plain Keras Adam holding the same optimizer state, for saving: the
    Horovod optimizer class lives in horovod's module, which load_model(safe_mode) can't load."""
    from tensorflow import keras
    from starscale import lstm
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    opt = lstm.make_optimizer(lcfg["learning_rate"], lcfg["clipnorm"])
    lstm.compile_model(copy, opt, mixed_precision=lcfg["mixed_precision"])
    copy.optimizer.build(copy.trainable_variables)
    _set_optimizer_state(copy, model)
    return copy


def _set_optimizer_state(model, loaded) -> None:
    """Copy loaded's optimizer variables (iterations, moments, …) into model's optimizer."""
    src = list(loaded.optimizer.variables)
    dst = list(model.optimizer.variables)
    if len(src) != len(dst) or any(s.shape != d.shape for s, d in zip(src, dst)):
        raise ValueError(f"optimizer state does not fit: {len(src)} variables vs {len(dst)} "
                         f"(checkpoint from another model shape?)")
    for s, d in zip(src, dst):
        d.assign(s)


# --------------------------------------------------------------------------- the rank function
def train_rank(args: dict[str, Any]) -> dict[str, Any]:
    """Train on this rank's shards; return this rank's summary (rank 0 also saves final.keras).

    args: config (cfg.to_dict()), seq_dir, vocab_size, max_len, train_rows / val_rows
    ({shard: rows}), class_weights (5 floats), ckpt_dir, fingerprint, vocab_path, hard_exit,
    hooks ({nan_at_step, return_ids}).
    """
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
                _write_failure(args["ckpt_dir"], f"rank {rank}: {type(exc).__name__}: {exc}", rank)
            except Exception:                # noqa: BLE001
                pass
        if args.get("hard_exit"):
            _exit_now(args)
        raise


def _exit_now(args: dict[str, Any]) -> None:
    """A failed worker process exits here, without unwinding. Unwinding drops the last reference
    to the tf.data iterator, whose destructor waits for its prefetch thread; that thread may be
    inside the Python generator waiting for the GIL this thread holds: a deadlock, seen after a
    peer rank's worker was killed (the rank never exited, so the launcher never returned)."""
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    if (args.get("hooks") or {}).get("hang_on_failure"):
        # Test hook: stand in for that deadlock (a failed rank that never exits), so the
        # driver's failure watch (train.failure_grace_s) can be tested.
        while True:
            time.sleep(3600)
    os._exit(FAILURE_EXIT_CODE)


def _train_rank(args: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    from tensorflow import keras
    from starscale import lstm

    cfg = args["config"]
    lcfg, tcfg = cfg["lstm"], cfg["train"]
    hooks = args.get("hooks") or {}
    seed = int(cfg["run"]["seed"])

    # Horovod: one process per worker; ranks talk over Gloo.
    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if gpus and tcfg["use_gpu"]:
            # Horovod: pin one GPU per process by local rank.
            gpu = gpus[local_rank % len(gpus)]
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(gpu, "GPU")
        elif gpus:
            tf.config.set_visible_devices([], "GPU")
    except RuntimeError as exc:             # local mode: TF already initialised in this process
        print(f"starscale train: GPU visibility unchanged ({exc})", file=sys.stderr)
    keras.utils.set_random_seed(seed)
    if lcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()

    seq_dir = args["seq_dir"]
    ckpt_dir = args["ckpt_dir"]
    fs, ckpt_root = filesystem(ckpt_dir)
    train_rows = {int(k): int(v) for k, v in args["train_rows"].items()}
    val_rows = {int(k): int(v) for k, v in args["val_rows"].items()}
    batch_size = int(lcfg["batch_size"])
    steps = steps_per_epoch(train_rows, size, batch_size)
    my_train = assign_shards(list(train_rows), rank, size, "train")
    train_files_by_shard = list_shards(seq_dir, "train")
    train_files = [f for s in my_train for f in train_files_by_shard.get(s, [])]
    val_files_by_shard = list_shards(seq_dir, "validation")
    my_val = validation_shards(val_rows, rank, size)
    val_files = [f for s in my_val for f in val_files_by_shard.get(s, [])]

    # Rank 0 reads the checkpoint state; everyone gets the same decision.
    state = None
    if rank == 0:
        state = read_state(ckpt_dir)
        if state is not None and state.get("fingerprint") != args["fingerprint"]:
            print(f"starscale train: checkpoint in {ckpt_dir} is for another config or input; "
                  f"starting fresh", file=sys.stderr)
            state = None
    state = hvd_tf.broadcast_object(state, root_rank=0, name="ckpt_state")
    start_epoch = int(state["completed_epochs"]) if state else 0
    epochs = int(lcfg["epochs"])

    matrix = None
    if lcfg["pretrained_vectors"] and rank == 0:
        # Only rank 0 reads the vectors: its weights are broadcast to every rank below.
        matrix = _pretrained_matrix(lcfg["pretrained_vectors"], args["vocab_path"],
                                    lcfg["embedding_dim"], seed)
    model = lstm.build_model(
        args["vocab_size"], args["max_len"], embedding_dim=lcfg["embedding_dim"],
        units=lcfg["units"], layers=lcfg["layers"], bidirectional=lcfg["bidirectional"],
        spatial_dropout=lcfg["spatial_dropout"], dropout=lcfg["dropout"],
        recurrent_dropout=lcfg["recurrent_dropout"], embedding_matrix=matrix,
        embedding_trainable=lcfg["embedding_trainable"],
        mixed_precision=lcfg["mixed_precision"], seed=seed)
    # Horovod: scale the learning rate by the number of workers (the effective batch grows).
    lr = lcfg["learning_rate"] * (size if tcfg["scale_lr"] else 1)
    # Horovod: the distributed optimizer averages gradients across ranks with allreduce.
    optimizer = hvd.DistributedOptimizer(lstm.make_optimizer(lr, lcfg["clipnorm"]))
    lstm.compile_model(model, optimizer, mixed_precision=lcfg["mixed_precision"])
    model.optimizer.build(model.trainable_variables)

    best_weights = None
    if state:
        if rank == 0:
            data = _get_bytes(fs, f"{ckpt_root}/{state['model_file']}")
            if data is None:
                raise ValueError(f"{ckpt_dir}/{state['model_file']}: checkpoint named in "
                                 f"{STATE_FILE} is missing")
            loaded = _load_model_bytes(data)
            model.set_weights(loaded.get_weights())
            _set_optimizer_state(model, loaded)
            if state.get("best_file"):
                blob = _get_bytes(fs, f"{ckpt_root}/{state['best_file']}")
                with np.load(io.BytesIO(blob)) as npz:
                    best_weights = [npz[f"w{i}"] for i in range(len(npz.files))]
        best_weights = hvd_tf.broadcast_object(best_weights, root_rank=0, name="best_weights")
    # Horovod: start every rank from rank 0's weights and optimizer state (fresh or resumed).
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    hvd_tf.broadcast_variables(model.optimizer.variables, root_rank=0)

    seen_ids: set | None = set() if hooks.get("return_ids") else None
    train_ds = train_dataset(train_files, seq_dir, batch_size=batch_size, steps=steps,
                             start_epoch=start_epoch, seed=seed, rank=rank,
                             shuffle_buffer=int(lcfg["shuffle_buffer"]),
                             class_weights=args["class_weights"], max_len=args["max_len"],
                             nan_at_step=hooks.get("nan_at_step"), seen_ids=seen_ids)
    val_ds = None
    if val_files:
        val_ds = tf.data.Dataset.from_generator(
            lambda: eval_batches(val_files, seq_dir, batch_size),
            output_signature=batch_signature(args["max_len"])[:2]).prefetch(2)

    watchdog = Watchdog(tcfg["stall_timeout_s"], hard_exit=bool(args.get("hard_exit")),
                        where=f"rank {rank}/{size}",
                        on_stall=lambda msg: _write_failure(ckpt_dir, msg, rank))
    progress = _Progress(watchdog)
    best = _BestWeights(int(lcfg["early_stopping_patience"]), state, best_weights)
    callbacks = [
        # Horovod: rank 0's variables everywhere after the first batch (a no-op here since we
        # broadcast before fit, kept so optimizer slots created lazily are in sync too).
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        # Horovod: average epoch metrics (loss, val_loss) over ranks before anything reads them.
        hvd.callbacks.MetricAverageCallback(),
    ]
    if size > 1 and tcfg["scale_lr"] and tcfg["warmup_epochs"] > 0:
        # Horovod: ramp from lr/size to lr over the first epochs (large-batch warmup).
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=tcfg["warmup_epochs"], steps_per_epoch=steps, verbose=0))
        callbacks.append(_SettleLR(lr, tcfg["warmup_epochs"]))
    callbacks += [_ReseedDropout(seed, rank), progress, _NanGuard(rank, ckpt_dir, lambda: progress.epoch), best,
                  _Checkpointer(rank, ckpt_dir, args["fingerprint"], lcfg, best,
                                state.get("history") if state else None)]
    if hooks.get("epoch_sleep_s"):
        callbacks.append(_Sleep(float(hooks["epoch_sleep_s"]), watchdog))

    started = time.time()
    history: dict[str, list] = dict(state.get("history", {})) if state else {}
    stopped_before = bool(state and state.get("stopped"))
    ran_epochs = 0
    watchdog.start()
    try:
        if start_epoch < epochs and not stopped_before:
            fit = model.fit(train_ds, steps_per_epoch=steps, epochs=epochs,
                            initial_epoch=start_epoch, validation_data=val_ds,
                            # Horovod: Keras progress from rank 0 only (one line per epoch)
                            callbacks=callbacks, verbose=2 if rank == 0 else 0)
            for key, vals in fit.history.items():
                history.setdefault(key, []).extend(float(v) for v in vals)
            ran_epochs = len(fit.history.get("loss", []))
        elif best.best_weights is not None:
            model.set_weights(best.best_weights)
    except Stalled:
        raise TrainingFailed(f"rank {rank}: {watchdog.fired}") from None
    finally:
        watchdog.stop()
    seconds = time.time() - started
    rows_seen = ran_epochs * steps * batch_size
    result = {
        "rank": rank, "size": size, "train_shards": my_train, "val_shards": my_val,
        "steps_per_epoch": steps, "initial_epoch": start_epoch, "epochs_run": ran_epochs,
        "epochs_completed": start_epoch + ran_epochs, "stopped_early": best.stopped or stopped_before,
        "best_epoch": best.best_epoch, "best_val_loss": best.best,
        "rows_seen": rows_seen, "train_seconds": round(seconds, 3),
        "samples_per_s": round(rows_seen * size / seconds, 1) if seconds > 0 and rows_seen else None,
        "history": history, "checksum": lstm.weights_checksum(model),
        "learning_rate": lr, "cudnn": lstm.uses_cudnn(model),
    }
    if seen_ids is not None:
        result["review_ids"] = sorted(seen_ids)
    if rank == 0:
        _put_bytes(fs, f"{ckpt_root}/{FINAL_FILE}", _model_bytes(_plain_copy(model, lcfg)))
    return result


# --------------------------------------------------------------------------- callbacks
def _keras_callback():
    from tensorflow import keras
    return keras.callbacks.Callback


class _Progress(_keras_callback()):
    """Heartbeats for the watchdog; remembers the current epoch and batch."""

    def __init__(self, watchdog: Watchdog):
        super().__init__()
        self.watchdog = watchdog
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.watchdog.beat(f"epoch {epoch + 1} start")

    def on_train_batch_end(self, batch, logs=None):
        self.watchdog.beat(f"epoch {self.epoch + 1} batch {batch + 1}")

    def on_test_batch_end(self, batch, logs=None):
        self.watchdog.beat(f"epoch {self.epoch + 1} validation batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self.watchdog.beat(f"epoch {epoch + 1} end")


class _Sleep(_keras_callback()):
    """Test hook: pause after each epoch's checkpoint (a window to kill the process in)."""

    def __init__(self, seconds: float, watchdog: Watchdog):
        super().__init__()
        self.seconds, self.watchdog = seconds, watchdog

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)
        self.watchdog.beat(f"epoch {epoch + 1} end")


class _ReseedDropout(_keras_callback()):
    """Dropout masks from (seed, rank, epoch): the same whether the run resumed or not, and
    different on each rank."""

    def __init__(self, seed: int, rank: int):
        super().__init__()
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, epoch, logs=None):
        from starscale import lstm
        lstm.reseed_dropout(self.model, self.seed, self.rank, epoch)


class _SettleLR(_keras_callback()):
    """After warmup, set the learning rate to exactly its target (a resumed run, which skips the
    warmup callback, and an uninterrupted one then use the same rate)."""

    def __init__(self, lr: float, warmup_epochs: int):
        super().__init__()
        self.lr, self.warmup_epochs = lr, warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.warmup_epochs:
            self.model.optimizer.learning_rate.assign(self.lr)


class _NanGuard(_keras_callback()):
    """Stop at the first non-finite loss (or weights) with the epoch and batch in the message."""

    def __init__(self, rank: int, ckpt_dir: str, epoch_of):
        super().__init__()
        self.rank, self.ckpt_dir, self.epoch_of = rank, ckpt_dir, epoch_of

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        # The output bias is 5 numbers: cheap, and after a NaN step it is NaN on every rank (the
        # allreduced gradient is NaN everywhere), so all ranks stop at the same batch.
        bias = self.model.layers[-1].bias.numpy()
        if math.isfinite(loss) and np.isfinite(bias).all():
            return
        state = read_state(self.ckpt_dir)
        last = (f"last good checkpoint: {self.ckpt_dir}/{state['model_file']} (epoch "
                f"{state['completed_epochs']})" if state else "no checkpoint written yet")
        msg = (f"NaN loss at epoch {self.epoch_of() + 1} batch {batch + 1} on rank {self.rank}: "
               f"training stopped; {last}")
        _write_failure(self.ckpt_dir, msg, self.rank)
        raise TrainingFailed(msg)


class _BestWeights(_keras_callback()):
    """Early stopping on the (rank-averaged) validation loss, keeping the best weights in memory
    and restoring them at the end of training, whether or not it stopped early."""

    def __init__(self, patience: int, state: dict | None, best_weights):
        super().__init__()
        self.patience = patience
        self.best = state.get("best") if state else None
        self.wait = int(state.get("wait", 0)) if state else 0
        self.best_epoch = state.get("best_epoch") if state else None
        self.best_weights = best_weights
        self.changed = False
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get("val_loss", logs.get("loss"))
        value = float(value) if value is not None else math.inf
        self.changed = False
        if self.best is None or value < self.best:
            self.best, self.wait, self.best_epoch = value, 0, epoch + 1
            self.best_weights = self.model.get_weights()
            self.changed = True
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _Checkpointer(_keras_callback()):
    """Rank 0: model + optimizer to epoch-NNNN.keras, best weights, then state.json — each a temp
    file renamed into place, state last, so a kill at any point leaves a loadable checkpoint.
    Never writes non-finite weights."""

    def __init__(self, rank: int, ckpt_dir: str, fingerprint: str, lcfg: dict,
                 best: _BestWeights, history: dict | None):
        super().__init__()
        self.rank, self.ckpt_dir, self.fingerprint, self.lcfg = rank, ckpt_dir, fingerprint, lcfg
        self.best = best
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, val in (logs or {}).items():
            self.history.setdefault(key, []).append(float(val))
        if self.rank != 0:
            return
        weights = self.model.get_weights()
        if not all(np.isfinite(w).all() for w in weights):
            raise TrainingFailed(f"non-finite weights at the end of epoch {epoch + 1}: "
                                 f"checkpoint not written")
        fs, root = filesystem(self.ckpt_dir)
        fs.create_dir(root, recursive=True)
        name = f"epoch-{epoch + 1:04d}.keras"
        _put_bytes(fs, f"{root}/{name}", _model_bytes(_plain_copy(self.model, self.lcfg)))
        previous = read_state(self.ckpt_dir)
        best_file = previous.get("best_file") if previous else None
        if self.best.changed or best_file is None:
            best_file = BEST_FILE
            buf = io.BytesIO()
            np.savez(buf, **{f"w{i}": w for i, w in enumerate(self.best.best_weights or weights)})
            _put_bytes(fs, f"{root}/{best_file}", buf.getvalue())
        state = {"completed_epochs": epoch + 1, "model_file": name, "best_file": best_file,
                 "best": self.best.best, "wait": self.best.wait, "best_epoch": self.best.best_epoch,
                 "stopped": bool(self.model.stop_training), "history": self.history,
                 "fingerprint": self.fingerprint}
        _put_bytes(fs, f"{root}/{STATE_FILE}", json.dumps(state, indent=1).encode())
        # Keep the newest two epoch files; state.json names the newest.
        for old in range(1, epoch):
            try:
                fs.delete_file(f"{root}/epoch-{old:04d}.keras")
            except (FileNotFoundError, OSError):
                pass


def main(argv: list[str] | None = None) -> None:
    """horovodrun entry: `horovodrun -np N --gloo python -m starscale.hvd_train ARGS.json`.

    Each rank runs train_rank(args); rank 0 writes its result beside the args (ARGS.json →
    ARGS.result.json) for the launching stage.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m starscale.hvd_train ARGS.json", file=sys.stderr)
        raise SystemExit(2)
    with open(argv[0]) as fh:
        args = json.load(fh)
    args["hard_exit"] = True
    result = train_rank(args)
    import horovod.tensorflow as hvd_tf
    results = hvd_tf.allgather_object(result, name="rank_results")
    if result["rank"] == 0:
        out = argv[0].rsplit(".json", 1)[0] + ".result.json"
        with open(out + ".tmp", "w") as fh:
            json.dump(results, fh)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
