"""Benchmark 3: the training input pipeline alone vs the LSTM's consumption rate on CPU.

Input side: the exact tf.data pipeline of starscale.hvd_train._train_rank —
`tf.data.Dataset.from_generator(hvd_train.train_batches(...)).prefetch(2)` over the encoded
Parquet shards of one rank (shuffle buffer lstm.shuffle_buffer, class weights, one-hot labels) —
iterated with no model attached: samples/s. Consumption side, in the same process: the study's
LSTM (same batch size) trained with model.fit on batches already in memory, steps/s × batch
size. The input must never be the bottleneck: input_over_consumption ≫ 1.

    python bench/input_pipeline.py            # 200k-row table, 400 batches / 40 train steps
    python bench/input_pipeline.py --quick
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import lstm_common  # noqa: E402

NAME = "input_pipeline"


def input_rate(root: Path, model: dict, batches: int, shuffle_buffer: int) -> float:
    """Samples/s of the rank-0 tf.data pipeline of a 1-worker run, no model."""
    from starscale import hvd_train
    seq_dir = str(root / "sequences")
    shards = hvd_train.list_shards(seq_dir, "train")
    files = [f for s in sorted(shards) for f in shards[s]]
    ds = hvd_train.train_dataset(files, seq_dir, max_len=model["max_len"],
                                 batch_size=model["batch_size"], steps=batches, start_epoch=0,
                                 seed=42, rank=0, shuffle_buffer=shuffle_buffer,
                                 class_weights=[1.0] * 5)
    started = time.perf_counter()
    n = 0
    for ids, _labels, _weights in ds.take(batches):
        n += int(ids.shape[0])
    return n / (time.perf_counter() - started)


def consumption_rate(model: dict, steps: int) -> float:
    """Samples/s of model.fit on in-memory batches (steady state: a warm-up fit first)."""
    import numpy as np
    import tensorflow as tf
    from starscale import lstm
    bs = model["batch_size"]
    rng = np.random.default_rng(0)
    ids = rng.integers(2, model["vocab_size"], size=(bs * steps, model["max_len"]), dtype=np.int32)
    labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=bs * steps)]
    ds = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(bs).cache()
    net = lstm.build_model(model["vocab_size"], model["max_len"],
                           embedding_dim=model["embedding_dim"], units=model["units"],
                           spatial_dropout=0.2, seed=42)
    lstm.compile_model(net, lstm.make_optimizer(1e-3))
    net.fit(ds.take(2), epochs=1, verbose=0)          # tracing, outside the timing
    started = time.perf_counter()
    net.fit(ds, epochs=1, verbose=0)
    return bs * steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    model = lstm_common.QUICK_MODEL if args.quick else lstm_common.FULL_MODEL
    rows = 2_000 if args.quick else 200_000
    batches, steps = (50, 5) if args.quick else (400, 40)
    root = lstm_common.write_sequences(common.WORK / "data" / f"seq_{rows}_{model['max_len']}",
                                       rows, shards=2, files_per_shard=4,
                                       vocab_size=model["vocab_size"], max_len=model["max_len"])
    shuffle_buffer = 1000 if args.quick else 10_000
    inputs, consumed = [], []
    for i in range(args.repeats):
        inputs.append(input_rate(root, model, batches, shuffle_buffer))
        consumed.append(consumption_rate(model, steps))
        print(f"  run {i + 1}: input {inputs[-1]:.0f}/s, LSTM {consumed[-1]:.0f}/s", flush=True)
    inp, con = common.median(inputs), common.median(consumed)
    results = [{"side": "input_pipeline", "samples_per_s": round(inp, 1),
                "runs": [round(x, 1) for x in inputs], "batches": batches},
               {"side": "lstm_consumption", "samples_per_s": round(con, 1),
                "runs": [round(x, 1) for x in consumed], "steps": steps}]
    ratio = {"input_over_consumption": round(inp / con, 2)}
    common.print_table(results, ["side", "samples_per_s", "runs"],
                       f"input pipeline vs LSTM consumption (CPU), median of {args.repeats}")
    print(ratio)
    return common.write_report(args, NAME, results,
                               {"model": model, "shuffle_buffer": shuffle_buffer, **ratio}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
