"""Benchmark 4: LSTM training throughput, same model and batch size, fixed number of steps.

- study: Keras model.fit on NumPy arrays already in memory (the study's notebook);
- starscale 1 worker: `horovodrun -np 1 --gloo python -m starscale.hvd_train` streaming the
  encoded Parquet shards through tf.data (the train-lstm stage's per-rank function);
- starscale 2 workers: the same with `-np 2` (Gloo allreduce of the gradients).
Every run trains `--steps` steps per rank of one epoch on CPU (the study's model: embedding 300,
LSTM 64, batch 128); samples/s = samples trained / seconds inside fit (tracing of the first
step included on every side). Overheads: streaming = 1 − starscale_1 / study; Horovod =
1 − starscale_2 / (2 × starscale_1) (the scaling efficiency lost; on a 2-core machine both
ranks share the same cores, so this mostly measures CPU contention, not Horovod itself).

    python bench/lstm_throughput.py            # 60 steps per rank, 3 runs of each side
    python bench/lstm_throughput.py --quick    # tiny model, 5 steps
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import lstm_common  # noqa: E402

NAME = "lstm_throughput"


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--steps", type=int, default=None, help="steps per rank (default 60)")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    model = lstm_common.QUICK_MODEL if args.quick else lstm_common.FULL_MODEL
    steps = args.steps or (5 if args.quick else 60)
    rows = 2_000 if args.quick else 200_000
    root = lstm_common.write_sequences(common.WORK / "data" / f"seq_{rows}_{model['max_len']}",
                                       rows, shards=2, files_per_shard=4,
                                       vocab_size=model["vocab_size"], max_len=model["max_len"])
    runs: dict[str, list] = {"study": [], "starscale_1": [], "starscale_2": []}
    for i in range(args.repeats):
        study = lstm_common.run_study(root, model, steps)
        runs["study"].append({"samples_per_s": study["samples_per_s"],
                              "samples_per_s_after_first_batch":
                                  study["samples_per_s_after_first_batch"],
                              "train_seconds": study["train_seconds"],
                              "peak_mib": study["peak_mib"]})
        for workers in (1, 2):
            r = lstm_common.run_horovod(root, model, workers, steps, f"tp{workers}")
            runs[f"starscale_{workers}"].append({"samples_per_s": r["samples_per_s"],
                                                 "train_seconds": r["train_seconds"],
                                                 "peak_mib": r["tree_peak_mib"]})
        print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1]['samples_per_s']:.0f}/s"
                                             for k, v in runs.items()), flush=True)
    med = {k: common.summarize_runs(v) for k, v in runs.items()}
    study, one, two = (med[k]["samples_per_s"] for k in ("study", "starscale_1", "starscale_2"))
    results = [{"side": k, "workers": {"study": 1, "starscale_1": 1, "starscale_2": 2}[k],
                "steps_per_rank": steps, "batch_size": model["batch_size"],
                "samples_per_s": med[k]["samples_per_s"],
                "train_seconds": med[k]["train_seconds"], "peak_mib": med[k]["peak_mib"],
                "runs": med[k]} for k in runs]
    overheads = {"streaming_overhead_pct": round(100 * (1 - one / study), 1),
                 "horovod_overhead_pct": round(100 * (1 - two / (2 * one)), 1),
                 "two_workers_over_study": round(two / study, 3)}
    common.print_table(results, ["side", "workers", "steps_per_rank", "batch_size",
                                 "samples_per_s", "train_seconds", "peak_mib"],
                       f"LSTM training throughput, median of {args.repeats}")
    print(overheads)
    return common.write_report(args, NAME, results, {"model": model, "overheads": overheads},
                               started)


if __name__ == "__main__":
    main(sys.argv[1:])
