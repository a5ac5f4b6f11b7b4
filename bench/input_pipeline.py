"""Benchmark 3: the training input pipeline alone vs the LSTM's consumption rate on CPU, and
(--feed) the same pipeline feeding a trivial training step at the GPU batch size.

Input side: the exact tf.data pipeline of a rank (starscale.training.data.train_dataset:
`tf.data.Dataset.from_generator(train_batches(...)).prefetch(AUTOTUNE)`) over the encoded
Parquet shards of one rank (shuffle buffer lstm.shuffle_buffer, class weights, one-hot labels) —
iterated with no model attached: samples/s. Consumption side, in the same process: the study's
LSTM (same batch size) trained with model.fit on batches already in memory, steps/s × batch
size. The input must never be the bottleneck: input_over_consumption ≫ 1.

--feed (docs/bench/input_feed.json): a GPU rank's input. The pipeline at conf/gpu.yaml's
lstm.batch_size feeds a compiled training step that does next to nothing (a stand-in for a GPU
fast enough that the input is the limit), in the same process; run it pinned to one core
(`taskset -c 1`), the core a rank has. Cases: the rank's pipeline, the one before (prefetch 2,
every review id turned into a Python string), and the rank's pipeline under Keras' model.fit
with a trivial model (the rank's real loop, Keras' per-step overhead included). Each reports
samples/s of wall time and per CPU-second of this process (on a shared machine the second
says what a dedicated core would do). Target: 150k samples/s per rank.

    python bench/input_pipeline.py            # 200k-row table, 400 batches / 40 train steps
    python bench/input_pipeline.py --quick
    taskset -c 1 python bench/input_pipeline.py --feed     # 200k rows, 600 batches of 512
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import lstm_common  # noqa: E402

NAME = "input_pipeline"
FEED_NAME = "input_feed"
FEED_TARGET = 150_000          # samples/s per rank (issue 22)
# (case, prefetch (None: AUTOTUNE), review ids read, consumer)
FEED_CASES = [("rank pipeline", None, False, "step"),
              ("before: prefetch 2 + review ids", 2, True, "step"),
              ("rank pipeline, Keras fit", None, False, "fit")]


def rank_files(root: Path) -> tuple[str, list[str]]:
    """(sequences folder, every train file): the input of a 1-worker rank."""
    from starscale.training import data
    seq_dir = str(root / "sequences")
    shards = data.list_shards(seq_dir, "train")
    return seq_dir, [f for s in sorted(shards) for f in shards[s]]


def input_rate(root: Path, model: dict, batches: int, shuffle_buffer: int) -> float:
    """Samples/s of the rank-0 tf.data pipeline of a 1-worker run, no model."""
    from starscale import hvd_train
    seq_dir, files = rank_files(root)
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


# --------------------------------------------------------------------------- --feed
def trivial_model(max_len: int):
    """ids → one Dense(5) over the ids as floats: a training step with next to no compute."""
    import tensorflow as tf
    from tensorflow import keras
    ids = keras.Input((max_len,), dtype=tf.int32)
    scaled = keras.layers.Rescaling(1e-4)(ids)
    model = keras.Model(ids, keras.layers.Dense(5, activation="softmax")(scaled))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="categorical_crossentropy")
    return model


def feed_rate(root: Path, *, rows: int, max_len: int, batch_size: int, batches: int,
              shuffle_buffer: int, prefetch: int | None, with_ids: bool, consumer: str) -> dict:
    """Samples/s (wall, and per CPU-second of this process) of the rank's train_dataset feeding
    `consumer`: "step", a compiled step that folds each batch into one variable, or "fit",
    model.fit of trivial_model (with the sample weights, as a rank fits). The first batch
    (tracing) is left out. The input is endless: epochs of rows // batch_size batches."""
    import tensorflow as tf
    from starscale import lstm
    from starscale.training import data
    seq_dir, files = rank_files(root)
    ds = data.train_dataset(files, seq_dir, max_len=max_len, prefetch=prefetch,
                            batch_size=batch_size, steps=rows // batch_size, start_epoch=0, seed=42,
                            rank=0, shuffle_buffer=shuffle_buffer, class_weights=[1.0] * 5,
                            seen_ids=set() if with_ids else None)
    if consumer == "fit":
        model = trivial_model(max_len)
        cpu = time.process_time()
        _, whole, steady = lstm.timed_fit(model, ds, steps_per_epoch=batches + 1, epochs=1,
                                          verbose=0)
        cpu_s = (time.process_time() - cpu) * (steady / whole)   # ≈ the steady part's share
        return {"samples_per_s": batches * batch_size / steady,
                "samples_per_cpu_s": batches * batch_size / cpu_s}
    total = tf.Variable(0.0)

    @tf.function
    def step(ids, labels, weights):
        total.assign_add(tf.reduce_sum(weights * labels[:, 0]) + tf.cast(ids[0, 0], tf.float32))

    batches_in = iter(ds)
    step(*next(batches_in))                                   # tracing
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        step(*next(batches_in))
    total.numpy()                                             # wait for the last step
    wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    return {"samples_per_s": batches * batch_size / wall,
            "samples_per_cpu_s": batches * batch_size / cpu_s}


def feed_main(args) -> dict:
    """--feed: FEED_CASES at conf/gpu.yaml's batch size, each args.repeats times (medians)."""
    from starscale.config import load_config
    started = common.machine()
    gpu = load_config([str(common.REPO / "conf" / "cluster.yaml"),
                       str(common.REPO / "conf" / "gpu.yaml")])
    max_len = 20 if args.quick else gpu.encode.max_len
    batch_size = 32 if args.quick else gpu.lstm.batch_size
    rows = 2_000 if args.quick else 200_000
    batches = 20 if args.quick else 600
    shuffle_buffer = 500 if args.quick else gpu.lstm.shuffle_buffer
    root = lstm_common.write_sequences(common.WORK / "data" / f"seq_{rows}_{max_len}", rows,
                                       shards=2, files_per_shard=4, vocab_size=20_000,
                                       max_len=max_len)
    cores = sorted(os.sched_getaffinity(0))
    runs: dict[str, list[dict]] = {case[0]: [] for case in FEED_CASES}
    for i in range(args.repeats):                   # the cases alternate: the same load for each
        for case, prefetch, with_ids, consumer in FEED_CASES:
            runs[case].append(feed_rate(
                root, rows=rows, max_len=max_len, batch_size=batch_size, batches=batches,
                shuffle_buffer=shuffle_buffer, prefetch=prefetch, with_ids=with_ids,
                consumer=consumer))
            print(f"  run {i + 1}, {case}: {runs[case][-1]['samples_per_s']:,.0f}/s wall, "
                  f"{runs[case][-1]['samples_per_cpu_s']:,.0f} per CPU-s", flush=True)
    results = []
    for case, prefetch, with_ids, consumer in FEED_CASES:
        row = {"case": case, "consumer": "Keras model.fit" if consumer == "fit"
               else "compiled step", "prefetch": "AUTOTUNE" if prefetch is None else prefetch,
               "review_ids": with_ids}
        for key in ("samples_per_s", "samples_per_cpu_s"):
            row[key] = round(common.median([r[key] for r in runs[case]]), 1)
            row[key.replace("samples", "runs")] = [round(r[key], 1) for r in runs[case]]
        # CPU seconds per wall second: < 1 when other processes shared the core
        row["cpu_share"] = round(row["samples_per_s"] / row["samples_per_cpu_s"], 2)
        results.append(row)
    shown = [{**r, "review_ids": "yes" if r["review_ids"] else "no"} for r in results]
    common.print_table(shown, ["case", "consumer", "prefetch", "review_ids", "samples_per_s",
                                 "samples_per_cpu_s", "cpu_share"],
                       f"input → trivial step, batch {batch_size}, cores {cores}, median of "
                       f"{args.repeats}")
    rank = results[0]
    return common.write_report(args, FEED_NAME, results, {
        "batch_size": batch_size, "max_len": max_len, "rows": rows, "batches": batches,
        "shuffle_buffer": shuffle_buffer, "cores_allowed": cores, "target": FEED_TARGET,
        "meets_target_wall": rank["samples_per_s"] >= FEED_TARGET,
        "meets_target_cpu": rank["samples_per_cpu_s"] >= FEED_TARGET}, started, script=NAME)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--feed", action="store_true",
                      help="the GPU batch size's input feeding a trivial step (input_feed.json)")
    args = args.parse_args(argv)
    if args.feed:
        return feed_main(common.finish_args(args, FEED_NAME))
    args = common.finish_args(args, NAME)
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
