"""horovodrun's entry: `horovodrun -np N --gloo python -m starscale.hvd_train ARGS.json`.

Each rank runs starscale.training.rank.train_rank on the RankArgs in ARGS.json; rank 0 writes
every rank's result beside it (ARGS.json → ARGS.result.json) for the launching stage
(starscale.training.launch). The training itself lives in the starscale.training package.
"""
from __future__ import annotations

import json
import os
import sys

# The benchmarks (bench/input_pipeline.py, bench/lstm_common.py) read the shards through these.
from starscale.training.data import list_shards, train_dataset  # noqa: F401
from starscale.training.launch import gather_results, result_file
from starscale.training.rank import RankArgs, train_rank


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m starscale.hvd_train ARGS.json", file=sys.stderr)
        raise SystemExit(2)
    with open(argv[0]) as fh:
        raw = json.load(fh)
    args = RankArgs.from_json({**raw, "hard_exit": True})
    result = train_rank(args)
    results = gather_results(result)
    if result["rank"] == 0:
        out = result_file(argv[0])
        with open(out + ".tmp", "w") as fh:
            json.dump(results, fh)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
