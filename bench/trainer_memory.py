"""Benchmark 5: trainer memory, peak PSS per Horovod rank on a 200k- and a 2M-row table.

starscale's ranks stream their Parquet shards (a shuffle buffer of lstm.shuffle_buffer rows is
the only data in memory), so a rank's peak should not grow with the table. Each run trains a
fixed number of steps (one partial epoch: memory flatness shows without a full epoch) with 2
Horovod workers (Gloo). Next to it, the study's way: the whole table loaded into NumPy arrays
before model.fit, whose peak grows with the rows.

    python bench/trainer_memory.py             # 200k and 2M rows, 2 workers, 30 steps
    python bench/trainer_memory.py --quick     # 2k and 20k rows, tiny model
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import lstm_common  # noqa: E402

NAME = "trainer_memory"


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--steps", type=int, default=None, help="steps per rank (default 30)")
    args.add_argument("--workers", type=int, default=2)
    args.add_argument("--no-study", action="store_true", help="skip the in-memory comparison")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    model = lstm_common.QUICK_MODEL if args.quick else lstm_common.FULL_MODEL
    steps = args.steps or (5 if args.quick else 30)
    sizes = (2_000, 20_000) if args.quick else (200_000, 2_000_000)
    results = []
    for rows in sizes:
        root = lstm_common.write_sequences(
            common.WORK / "data" / f"seq_{rows}_{model['max_len']}", rows, shards=2,
            files_per_shard=4 if rows < 1_000_000 else 16, vocab_size=model["vocab_size"],
            max_len=model["max_len"])
        runs, study_runs = [], []
        for i in range(args.repeats):
            r = lstm_common.run_horovod(root, model, args.workers, steps, f"mem{rows}")
            runs.append({"rank_peak_max_mib": max(r["rank_peak_mib"]),
                         "samples_per_s": r["samples_per_s"]})
            line = f"  {rows} run {i + 1}: ranks {r['rank_peak_mib']} MiB"
            if not args.no_study:
                s = lstm_common.run_study(root, model, steps)
                study_runs.append({"peak_mib": s["peak_mib"], "load_seconds": s["load_seconds"]})
                line += f", study {s['peak_mib']} MiB"
            print(line, flush=True)
        med = common.summarize_runs(runs)
        entry = {"rows": lstm_common.table_rows(root), "workers": args.workers,
                 "steps_per_rank": steps, "rank_peak_mib": med["rank_peak_max_mib"],
                 "runs": med}
        if study_runs:
            sm = common.summarize_runs(study_runs)
            entry.update({"study_peak_mib": sm["peak_mib"], "study_load_seconds": sm["load_seconds"],
                          "study_runs": sm})
        results.append(entry)
    small, big = results
    ratios = {"rank_peak_big_over_small": round(big["rank_peak_mib"] / small["rank_peak_mib"], 3),
              "rows_big_over_small": round(big["rows"] / small["rows"], 3)}
    if "study_peak_mib" in big:
        ratios["study_peak_big_over_small"] = round(big["study_peak_mib"] / small["study_peak_mib"], 3)
    common.print_table(results, ["rows", "workers", "steps_per_rank", "rank_peak_mib",
                                 "study_peak_mib", "study_load_seconds"],
                       f"trainer peak memory (PSS, max over ranks), median of {args.repeats}")
    print(ratios)
    return common.write_report(args, NAME, results, {"model": model, "ratios": ratios}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
