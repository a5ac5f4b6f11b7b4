"""The checkpoint folder of one LSTM training: what is in it, written and read atomically.

Folder (layout.checkpoints_dir; shared storage every rank's host can reach): ``epoch-NNNN.keras``
(model + optimizer), ``best-NNNN.weights.npz`` (early stopping's best weights as of epoch NNNN,
a new name each time, never overwritten), ``state.json`` (written last: completed epochs,
early-stopping state, history, fingerprint and the names of the two files it goes with: the
one commit point, so best weights and state always change together), ``final.keras``
(the trained model with best weights restored) and ``_FAILURE-<attempt>.json`` (why a rank of
one launch failed, read by that launch's driver to name the cause in its error; per launch, so
a marker left by an earlier or another run is never taken for this one's). Rank 0 alone writes; every file goes through
storage.write_bytes (temp file + rename), state last, so a kill leaves a loadable checkpoint.
"""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np

from starscale import layout, storage

STATE_FILE = "state.json"
BEST_FILE = "best.weights.npz"          # the name before issue 15; still read when a state names it
FINAL_FILE = "final.keras"
FAILURE_FILE = "_FAILURE.json"
KEEP_EPOCHS = 2
KERAS_MODULE_PREFIXES = ("keras.", "tf_keras.")     # plus "keras" itself


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:04d}.keras"


def best_file(epoch: int) -> str:
    return f"best-{epoch:04d}.weights.npz"


def _read_json(path: str) -> dict | None:
    data = storage.read_bytes(path)
    return json.loads(data) if data else None


def read_state(ckpt_dir: str) -> dict | None:
    return _read_json(layout.join(ckpt_dir, STATE_FILE))


def failure_file(attempt: str = "") -> str:
    """The failure marker of one launch (attempt: launch.new_attempt's id; "" for callers that
    have none, e.g. tools reading an old folder)."""
    return f"_FAILURE-{attempt}.json" if attempt else FAILURE_FILE


def read_failure(ckpt_dir: str, attempt: str = "") -> dict | None:
    return _read_json(layout.join(ckpt_dir, failure_file(attempt)))


def write_failure(ckpt_dir: str, message: str, rank: int, attempt: str = "") -> None:
    storage.write_bytes(layout.join(ckpt_dir, failure_file(attempt)),
                        json.dumps({"rank": rank, "message": message,
                                    "attempt": attempt}).encode())


def placement_file(attempt: str = "") -> str:
    return f"_PLACEMENT-{attempt}.json" if attempt else "_PLACEMENT.json"


def write_placement(ckpt_dir: str, placements: list[dict], attempt: str = "") -> None:
    """Rank 0 records where every rank of this launch runs (host, address, GPU), so the driver
    can name the host and rank of a peer that was lost."""
    storage.write_bytes(layout.join(ckpt_dir, placement_file(attempt)),
                        json.dumps(placements).encode())


def read_placement(ckpt_dir: str, attempt: str = "") -> list[dict] | None:
    raw = storage.read_bytes(layout.join(ckpt_dir, placement_file(attempt)))
    return json.loads(raw) if raw is not None else None


def clear_failure(ckpt_dir: str) -> None:
    """Remove every failure and placement marker (the caller holds the model folder's lease: no other live
    run of this tag writes here)."""
    from pyarrow import fs as pafs
    storage.make_dirs(ckpt_dir)
    fs, target = storage.filesystem(ckpt_dir)
    for info in fs.get_file_info(pafs.FileSelector(target)):
        if info.base_name.startswith(("_FAILURE", "_PLACEMENT")) and info.base_name.endswith(".json"):
            storage.delete_file(layout.join(ckpt_dir, info.base_name))


def clear_checkpoints(ckpt_dir: str) -> None:
    """Forget earlier progress: the next run starts at epoch 0."""
    storage.empty_dir(ckpt_dir)


def final_model_path(ckpt_dir: str) -> str:
    return layout.join(ckpt_dir, FINAL_FILE)


# --------------------------------------------------------------------------- Keras models as bytes
def model_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def check_keras_bytes(data: bytes, where: str) -> None:
    """ValueError unless a .keras archive's config names only Keras's own classes: every
    serialized object's module is keras(.*) and it has no custom registered name."""
    import zipfile
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"{where}: not a Keras model archive ({exc})") from None

    def walk(node: object) -> None:
        if isinstance(node, dict):
            module = node.get("module")
            registered = node.get("registered_name")
            if "class_name" in node and module is not None and not (
                    module == "keras" or str(module).startswith(KERAS_MODULE_PREFIXES)):
                raise ValueError(f"{where}: refusing to load a model whose config names "
                                 f"{module}.{node.get('class_name')} (only Keras's own classes "
                                 f"are loaded: a model file is data, not code)")
            if registered not in (None, node.get("class_name")) and "class_name" in node:
                raise ValueError(f"{where}: refusing to load a model with the custom object "
                                 f"{registered!r} (only Keras's own classes are loaded)")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)


def load_model_bytes(data: bytes, compile: bool = True, where: str = "model"):
    """A Keras model from .keras bytes, after check_keras_bytes (Keras's own
    classes only: a model file is data)."""
    from tensorflow import keras
    check_keras_bytes(data, where)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        with open(path, "wb") as fh:
            fh.write(data)
        return keras.models.load_model(path, safe_mode=True, compile=compile)


def plain_copy(model, lcfg):
    """The model with a plain Keras Adam holding the same optimizer state, for saving: the
    Horovod optimizer class lives in horovod's module, which load_model(safe_mode) can't load.
    lcfg: the LSTMConfig (learning_rate, clipnorm, mixed_precision)."""
    from tensorflow import keras
    from starscale import lstm
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    opt = lstm.make_optimizer(lcfg.learning_rate, lcfg.clipnorm)
    lstm.compile_model(copy, opt, mixed_precision=lcfg.mixed_precision)
    copy.optimizer.build(copy.trainable_variables)
    set_optimizer_state(copy, model)
    return copy


def set_optimizer_state(model, loaded) -> None:
    """Copy loaded's optimizer variables (iterations, moments, …) into model's optimizer."""
    src = list(loaded.optimizer.variables)
    dst = list(model.optimizer.variables)
    if len(src) != len(dst) or any(s.shape != d.shape for s, d in zip(src, dst)):
        raise ValueError(f"optimizer state does not fit: {len(src)} variables vs {len(dst)} "
                         f"(checkpoint from another model shape?)")
    for s, d in zip(src, dst):
        d.assign(s)


# --------------------------------------------------------------------------- save / restore
def save_final(ckpt_dir: str, model, lcfg) -> None:
    storage.write_bytes(final_model_path(ckpt_dir), model_bytes(plain_copy(model, lcfg)))


def save_epoch(ckpt_dir: str, epoch: int, model, lcfg, best_weights, best_changed: bool,
               state: dict) -> None:
    """Epoch `epoch` (1-based) done: model + optimizer, best weights under a new name when they
    changed, then state.json (state + the file names) last: replacing state.json is the one
    atomic commit, so a kill before it leaves the previous state with the files it names, and a
    kill after it the new ones. Files no state names any more are removed after the commit."""
    name = epoch_file(epoch)
    storage.write_bytes(layout.join(ckpt_dir, name), model_bytes(plain_copy(model, lcfg)))
    previous = read_state(ckpt_dir)
    old_best = previous.get("best_file") if previous else None
    best = old_best
    if best_changed or best is None:
        best = best_file(epoch)
        buf = io.BytesIO()
        np.savez(buf, **{f"w{i}": w for i, w in enumerate(best_weights)})
        storage.write_bytes(layout.join(ckpt_dir, best), buf.getvalue())
    full_state = {**state, "completed_epochs": epoch, "model_file": name, "best_file": best}
    storage.write_bytes(layout.join(ckpt_dir, STATE_FILE),
                        json.dumps(full_state, indent=1).encode())
    if old_best and old_best != best:
        storage.delete_file(layout.join(ckpt_dir, old_best))
    for old in range(1, epoch - KEEP_EPOCHS + 1):
        storage.delete_file(layout.join(ckpt_dir, epoch_file(old)))


def load_checkpoint(ckpt_dir: str, state: dict):
    """(the Keras model of state's epoch file, best weights or None) from a checkpoint."""
    data = storage.read_bytes(layout.join(ckpt_dir, state["model_file"]))
    if data is None:
        raise ValueError(f"{ckpt_dir}/{state['model_file']}: checkpoint named in "
                         f"{STATE_FILE} is missing")
    loaded = load_model_bytes(data, where=layout.join(ckpt_dir, state["model_file"]))
    best_weights = None
    if state.get("best_file"):
        blob = storage.read_bytes(layout.join(ckpt_dir, state["best_file"]))
        with np.load(io.BytesIO(blob)) as npz:
            best_weights = [npz[f"w{i}"] for i in range(len(npz.files))]
    return loaded, best_weights
