"""GPU smoke benchmark: one epoch of the study's LSTM on synthetic rows, on one device.

Prints samples/s (whole epoch, and after the first batch, which includes tracing) and whether
the fused cuDNN kernel runs: Keras' eligibility check (no recurrent dropout, tanh/sigmoid, …)
plus the runtime grappler actually picked (Keras' `return_runtime` probe: 2 = GPU/cuDNN kernel,
1 = generic CPU loop). On a machine without a GPU it runs the same code on the CPU.

    python bench/gpu_smoke.py                    # 200k rows, the study's model (make gpu-smoke)
    python bench/gpu_smoke.py --rows 2000 --embedding-dim 16 --units 8   # tiny CPU smoke test
    python bench/gpu_smoke.py --mixed-precision  # float16 compute, float32 softmax
"""
from __future__ import annotations

import argparse
import json
import sys


def runtime_probe(max_len: int, embedding_dim: int, units: int, recurrent_dropout: float) -> int:
    """The LSTM implementation grappler selects on this machine (0 unknown, 1 CPU, 2 cuDNN)."""
    import tensorflow as tf
    from tensorflow import keras
    probe = keras.layers.LSTM(units, recurrent_dropout=recurrent_dropout, return_runtime=True)

    @tf.function
    def run(x):
        _, runtime = probe(x, training=True)
        return runtime

    return int(run(tf.zeros((2, max_len, embedding_dim))).numpy())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--vocab", type=int, default=20_000)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--embedding-dim", type=int, default=300)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--recurrent-dropout", type=float, default=0.0)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from tensorflow import keras
    from starscale import lstm

    keras.utils.set_random_seed(args.seed)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, 5, size=args.rows)
    ids = rng.integers(2, args.vocab, size=(args.rows, args.max_len), dtype=np.int32)
    ids[:, :5] = (2 + labels[:, None] * 7 + np.arange(5)).astype(np.int32)   # a learnable signal
    data = (tf.data.Dataset.from_tensor_slices((ids, np.eye(5, dtype=np.float32)[labels]))
            .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))

    model = lstm.build_model(args.vocab, args.max_len, embedding_dim=args.embedding_dim,
                             units=args.units, spatial_dropout=0.2,
                             recurrent_dropout=args.recurrent_dropout,
                             mixed_precision=args.mixed_precision, seed=args.seed)
    lstm.compile_model(model, lstm.make_optimizer(1e-3), mixed_precision=args.mixed_precision)

    history, seconds, steady = lstm.timed_fit(model, data, epochs=1, verbose=0)
    steady_rows = args.rows - args.batch_size
    runtime = runtime_probe(args.max_len, args.embedding_dim, args.units, args.recurrent_dropout)
    report = {
        "device": "GPU" if gpus else "CPU", "gpus": [g.name for g in gpus],
        "rows": args.rows, "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision, "seconds": round(seconds, 2),
        "samples_per_s": round(args.rows / seconds, 1),
        "samples_per_s_after_first_batch": round(steady_rows / steady, 1) if steady else None,
        "loss": float(history.history["loss"][-1]),
        "cudnn_eligible": lstm.uses_cudnn(model)["layers"][0]["cudnn_eligible"],
        "lstm_runtime": {0: "unknown", 1: "cpu (generic loop)", 2: "gpu (cuDNN kernel)"}[runtime],
        "cudnn_in_use": runtime == 2,
        "tensorflow": tf.__version__,
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
