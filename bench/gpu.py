"""Benchmark 8: the LSTM on one GPU, cuDNN kernel vs recurrent dropout > 0, epoch projection.

Runs bench/gpu_smoke.py (owned by the LSTM work; called, not changed) in a fresh process per
run: once with recurrent_dropout 0 (Keras may take the fused cuDNN kernel) and once with
recurrent_dropout 0.2 (the generic loop), reads its JSON, and projects one epoch over
--epoch-rows rows (default 9M, the Wireless corpus) per GPU from the steady-state samples/s
(after the first batch). Without a GPU it runs the same on CPU (device "CPU" in the output).

    python bench/gpu.py                      # 200k rows per run (make gpu-smoke's default)
    python bench/gpu.py --rows-generic 50000 # the generic loop is slow: fewer rows for it
    python bench/gpu.py --quick              # 2k rows, tiny model, on CPU
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "gpu"


def smoke(extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "gpu_smoke.py"), *extra],
                          capture_output=True, text=True, cwd=common.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"gpu_smoke.py {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    text = proc.stdout
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--rows", type=int, default=None, help="rows per cuDNN run (default 200000)")
    args.add_argument("--rows-generic", type=int, default=None,
                      help="rows per recurrent-dropout run (default: --rows)")
    args.add_argument("--epoch-rows", type=int, default=9_000_000)
    args.add_argument("--mixed-precision", action="store_true")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    rows = args.rows or (2000 if args.quick else 200_000)
    tiny = ["--embedding-dim", "16", "--units", "8"] if args.quick else []
    mp = ["--mixed-precision"] if args.mixed_precision else []
    cases = [("cudnn_candidate", 0.0, rows), ("recurrent_dropout", 0.2, args.rows_generic or rows)]
    results = []
    for name, rd, n in cases:
        reports = [smoke(["--rows", str(n), "--recurrent-dropout", str(rd), *tiny, *mp])
                   for _ in range(args.repeats)]
        steady = [r["samples_per_s_after_first_batch"] or r["samples_per_s"] for r in reports]
        rate = common.median(steady)
        results.append({"case": name, "recurrent_dropout": rd, "rows": n,
                        "device": reports[-1]["device"], "lstm_runtime": reports[-1]["lstm_runtime"],
                        "cudnn_in_use": reports[-1]["cudnn_in_use"],
                        "samples_per_s": round(common.median([r["samples_per_s"] for r in reports]), 1),
                        "samples_per_s_steady": round(rate, 1),
                        "epoch_hours_projected": round(args.epoch_rows / rate / 3600, 3),
                        "runs": reports})
    common.print_table(results, ["case", "device", "lstm_runtime", "rows", "samples_per_s",
                                 "samples_per_s_steady", "epoch_hours_projected"],
                       f"LSTM on one device, median of {args.repeats}; epoch = {args.epoch_rows:,} rows")
    return common.write_report(args, NAME, results, {"epoch_rows": args.epoch_rows}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
