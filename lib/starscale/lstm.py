"""The LSTM classifier: building, pretrained vectors, saving and loading.

The default is the study's model: Embedding(vocab, 300, trainable) → SpatialDropout1D(0.2) →
LSTM(64) → Dense(5, softmax), Adam, categorical cross-entropy, categorical accuracy. Everything
here takes plain values (no Config, no Horovod) so the model can be built and tested alone.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import Any, Iterable

import numpy as np

N_CLASSES = 5
# A saved LSTM is data, not code: the model is rebuilt by build_model from ARCH_FILE (its
# arguments, checked by check_architecture) and WEIGHTS_FILE (numpy arrays, no pickles) is
# loaded into it. Nothing in a bundle names a class or module to import.
ARCH_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
MODEL_FILE = "model.keras"        # bundles before issue 15 (loaded with checkpoints' allow-list)
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
# build_model's arguments that shape the saved model, with their type and allowed range. The
# bounds keep a tampered model.json from allocating without limit (2^26 × 4096 floats is the
# largest embedding allowed).
ARCH_FIELDS: dict[str, tuple[type, float, float]] = {
    "vocab_size": (int, 2, 2 ** 26),
    "max_len": (int, 1, 100_000),
    "embedding_dim": (int, 1, 4096),
    "units": (int, 1, 4096),
    "layers": (int, 1, 16),
    "bidirectional": (bool, 0, 1),
    "spatial_dropout": (float, 0.0, 0.999),
    "dropout": (float, 0.0, 0.999),
    "recurrent_dropout": (float, 0.0, 0.999),
    "mixed_precision": (bool, 0, 1),
    "embedding_trainable": (bool, 0, 1),   # no effect on predictions; kept as trained
}


def build_model(vocab_size: int, max_len: int, *, embedding_dim: int, units: int, layers: int = 1,
                bidirectional: bool = False, spatial_dropout: float = 0.2, dropout: float = 0.0,
                recurrent_dropout: float = 0.0, embedding_matrix: np.ndarray | None = None,
                embedding_trainable: bool = True, mixed_precision: bool = False, seed: int = 0):
    """An uncompiled Keras model: ids (batch, max_len) int → class probabilities (batch, 5).

    embedding_matrix (vocab_size × embedding_dim) initialises the embedding (pretrained vectors);
    recurrent_dropout > 0 makes Keras fall back from the cuDNN kernel to the generic loop on GPU.
    mixed_precision: float16 compute; the softmax stays float32 so the loss is computed stably.
    Dropout layers draw from tf.random.Generator (a resettable state), so training can reseed
    them per epoch and a resumed run draws the same masks as an uninterrupted one.
    """
    import tensorflow as tf
    from tensorflow import keras

    if embedding_matrix is not None and embedding_matrix.shape != (vocab_size, embedding_dim):
        raise ValueError(f"embedding matrix has shape {embedding_matrix.shape}, expected "
                         f"({vocab_size}, {embedding_dim})")
    keras.backend.experimental.enable_tf_random_generator()
    dtype_policy = "mixed_float16" if mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(dtype_policy)
    init = (keras.initializers.Constant(embedding_matrix) if embedding_matrix is not None
            else keras.initializers.RandomUniform(-0.05, 0.05, seed=seed))
    inputs = keras.Input(shape=(max_len,), dtype=tf.int32, name="ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, embeddings_initializer=init,
                               trainable=embedding_trainable, name="embedding")(inputs)
    if spatial_dropout > 0:
        x = keras.layers.SpatialDropout1D(spatial_dropout, seed=seed, name="spatial_dropout")(x)
    for i in range(layers):
        last = i == layers - 1
        cell = keras.layers.LSTM(
            units, dropout=dropout, recurrent_dropout=recurrent_dropout, return_sequences=not last,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1 + i),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 101 + i),
            name=f"lstm_{i}")
        x = keras.layers.Bidirectional(cell, name=f"bilstm_{i}")(x) if bidirectional else cell(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", dtype="float32",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 999),
                                 name="stars")(x)
    model = keras.Model(inputs, outputs, name="starscale_lstm")
    keras.mixed_precision.set_global_policy("float32")   # don't leak the policy to later models
    return model


def make_optimizer(learning_rate: float, clipnorm: float | None = None):
    from tensorflow import keras
    kwargs = {"clipnorm": clipnorm} if clipnorm else {}
    return keras.optimizers.Adam(learning_rate=learning_rate, **kwargs)


def compile_model(model, optimizer, mixed_precision: bool = False) -> None:
    """Categorical cross-entropy + categorical accuracy, the study's choice (labels one-hot)."""
    from tensorflow import keras
    if mixed_precision:
        # Loss scaling keeps small float16 gradients from flushing to zero.
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def read_vocab(lines: Iterable[str]) -> list[str]:
    """vocab.txt lines → tokens (line i is id i)."""
    return [line.rstrip("\n") for line in lines]


def read_vectors(lines: Iterable[str], vocab: list[str], dim: int, seed: int,
                 source: str = "vectors") -> tuple[np.ndarray, int]:
    """GloVe / fastText text vectors → (vocab × dim float32 matrix, tokens found).

    Each line is 'token v1 … vdim'; a fastText header line ('count dim') is skipped. Tokens not
    in the file get small random rows (seeded), id 0 (<pad>) a zero row. A line with the wrong
    number of values is a ValueError naming the file and line.
    """
    index = {tok: i for i, tok in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.05, size=(len(vocab), dim)).astype(np.float32)
    matrix[0] = 0.0
    found = np.zeros(len(vocab), dtype=bool)
    for line_no, line in enumerate(lines, start=1):
        parts = line.rstrip("\n").rstrip(" ").split(" ")
        if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue                      # fastText header: "<count> <dim>"
        if len(parts) <= 1:
            continue                      # blank line
        if len(parts) != dim + 1:
            raise ValueError(f"{source}:{line_no}: expected a token and {dim} values "
                             f"(lstm.embedding_dim), got {len(parts) - 1} values")
        i = index.get(parts[0])
        if i is None or i == 0 or found[i]:
            continue
        try:
            matrix[i] = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise ValueError(f"{source}:{line_no}: non-numeric value in vector of {parts[0]!r}") from None
        found[i] = True
    return matrix, int(found.sum())


def timed_fit(model, *args, **kwargs) -> tuple[Any, float, float | None]:
    """model.fit(*args, **kwargs) timed: (history, seconds for the whole call, seconds from the
    end of the first batch — the steady state, without tracing — or None when only one batch ran).
    Used by the throughput benchmarks (bench/gpu_smoke.py, bench/lstm_common.py)."""
    import time
    from tensorflow import keras

    marks: dict[str, float] = {}

    class _FirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and "first" not in marks:
                marks["first"] = time.perf_counter()
            marks["last_batch"] = batch

    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _FirstBatch()]
    started = time.perf_counter()
    history = model.fit(*args, **kwargs)
    ended = time.perf_counter()
    steady = ended - marks["first"] if marks.get("last_batch", 0) > 0 else None
    return history, ended - started, steady


def uses_cudnn(model) -> dict[str, Any]:
    """Whether each LSTM layer can take the fused cuDNN kernel (Keras' own eligibility check)
    and whether a GPU is visible; the kernel runs only when both hold."""
    import tensorflow as tf
    from tensorflow import keras
    layers = []
    for layer in model.layers:
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
        if isinstance(inner, keras.layers.LSTM):
            layers.append({"layer": layer.name,
                           "cudnn_eligible": bool(getattr(inner, "_could_use_gpu_kernel", False))})
    gpu = bool(tf.config.list_logical_devices("GPU"))
    return {"gpu": gpu, "layers": layers,
            "cudnn": gpu and bool(layers) and all(x["cudnn_eligible"] for x in layers)}


def reseed_dropout(model, *key: int) -> int:
    """Reset every dropout generator in the model from a seed derived from key and the layer's
    position; returns how many were reset."""
    n = 0
    for i, layer in enumerate(model._flatten_layers()):
        gen = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if gen is not None:
            gen.reset_from_seed(int(np.random.SeedSequence([*key, i]).generate_state(1)[0]))
            n += 1
    return n


def weights_checksum(model) -> float:
    """A float64 sum of |w| over all weights: equal weights give equal checksums."""
    return float(sum(np.abs(np.asarray(w, dtype=np.float64)).sum() for w in model.get_weights()))


def check_architecture(raw: Any, where: str) -> dict[str, Any]:
    """model.json's content → build_model's keyword arguments, or a ValueError naming the file
    and key: every ARCH_FIELDS key present with its type and range, nothing else."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object of the model's shape, got "
                         f"{type(raw).__name__}")
    unknown = sorted(set(raw) - set(ARCH_FIELDS))
    missing = sorted(set(ARCH_FIELDS) - set(raw))
    if unknown or missing:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing key(s) {', '.join(missing)}"] if missing else [])))
    out: dict[str, Any] = {}
    for key, (kind, low, high) in ARCH_FIELDS.items():
        value = raw[key]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and low <= value <= high)
        if not ok:
            want = "true or false" if kind is bool else f"{kind.__name__} in [{low}, {high}]"
            raise ValueError(f"{where}: {key} must be {want}, got {value!r}")
        out[key] = kind(value)
    return out


def weights_bytes(model) -> bytes:
    """The model's weights in get_weights order as an .npz archive (w0, w1, …)."""
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    return buf.getvalue()


def model_from_bytes(arch_data: bytes, weights_data: bytes, where: str):
    """Rebuild a saved LSTM for scoring: build_model(**model.json) in float32 with weights.npz
    loaded into it. Only starscale's own model code runs; a bundle whose files don't fit is a
    ValueError naming them. where: the bundle folder (for messages).

    A model trained with mixed_precision is rebuilt in float32 all the same: its variables are
    float32 either way (the same weights.npz), and the scorers (the driver, Spark executors) run
    on CPUs, where float16 is emulated: slower and less exact than float32."""
    arch_where, weights_where = f"{where}/{ARCH_FILE}", f"{where}/{WEIGHTS_FILE}"
    try:
        raw = json.loads(arch_data)
    except ValueError as exc:
        raise ValueError(f"{arch_where}: not valid JSON ({exc})") from None
    model = build_model(**{**check_architecture(raw, arch_where), "mixed_precision": False})
    expected = model.get_weights()
    if not weights_data.startswith(b"PK"):
        raise ValueError(f"{weights_where}: not a numpy .npz archive")
    try:
        with np.load(io.BytesIO(weights_data), allow_pickle=False) as npz:
            names = [f"w{i}" for i in range(len(npz.files))]
            if sorted(npz.files) != sorted(names):
                raise ValueError(f"{weights_where}: arrays must be named w0..w{len(names) - 1}, "
                                 f"got {sorted(npz.files)[:5]}")
            arrays = [npz[name] for name in names]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{weights_where}: not a numpy .npz archive ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(weights_where):
            raise
        raise ValueError(f"{weights_where}: unreadable ({exc})") from None
    if len(arrays) != len(expected):
        raise ValueError(f"{weights_where}: {len(arrays)} weight arrays, the model that "
                         f"{ARCH_FILE} describes has {len(expected)}")
    for i, (got, want) in enumerate(zip(arrays, expected)):
        if got.shape != want.shape or not np.issubdtype(got.dtype, np.floating):
            raise ValueError(f"{weights_where}: w{i} is {got.dtype} {got.shape}, the model "
                             f"that {ARCH_FILE} describes needs float {want.shape}")
    model.set_weights(arrays)
    return model


def save_bundle(model, out_dir: str, vocab_text: str, config: dict[str, Any],
                architecture: dict[str, Any]) -> str:
    """Write model.json (architecture: build_model's arguments), weights.npz, vocab.txt and
    config.json into a local folder; returns it."""
    os.makedirs(out_dir, exist_ok=True)
    files = {ARCH_FILE: json.dumps(check_architecture(architecture, ARCH_FILE), indent=2,
                                   sort_keys=True).encode(),
             WEIGHTS_FILE: weights_bytes(model), VOCAB_FILE: vocab_text.encode(),
             CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True, default=str).encode()}
    for name, data in files.items():
        with open(os.path.join(out_dir, name), "wb") as fh:
            fh.write(data)
    return out_dir
