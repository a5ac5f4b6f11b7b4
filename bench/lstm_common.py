"""LSTM benchmark helpers: synthetic encoded shards, the Horovod run, the study's in-memory fit.

`write_sequences` writes a table in the encode stage's `sequences/` layout (docs/tables.md:
split=train/shard=k/part-*.parquet with review_id, label, weight, ids[max_len]) plus vocab.txt,
so the trainer reads it exactly as it reads encode's output. The ids are random with the label
written into the last five positions (a learnable signal; "pre" padding puts text at the end).

`run_horovod` runs `horovodrun -np N --gloo python -m starscale.hvd_train ARGS.json` (the
train-lstm stage's horovodrun launcher) with a fixed number of steps, and samples each rank's
peak PSS. `python bench/lstm_common.py study ARGS.json` is the study's way: every row loaded
into NumPy arrays, then Keras model.fit on them (same model, same batch size).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL_MODEL = {"vocab_size": 20_000, "max_len": 100, "embedding_dim": 300, "units": 64,
              "batch_size": 128}
QUICK_MODEL = {"vocab_size": 200, "max_len": 20, "embedding_dim": 8, "units": 4,
               "batch_size": 16}


def write_sequences(root: Path, rows: int, shards: int, files_per_shard: int, vocab_size: int,
                    max_len: int, seed: int = 5) -> Path:
    """root/sequences/split=train/shard=k/part-*.parquet + root/vocab.txt, made once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    done = root / "_DONE"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    per_file = rows // (shards * files_per_shard)
    for shard in range(shards):
        folder = root / "sequences" / "split=train" / f"shard={shard}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(files_per_shard):
            labels = rng.choice(5, size=per_file, p=[0.14, 0.067, 0.09, 0.167, 0.536])
            ids = rng.integers(2, vocab_size, size=(per_file, max_len), dtype=np.int32)
            ids[:, -5:] = (2 + (labels[:, None] * 5 + np.arange(5)) % (vocab_size - 2)).astype(np.int32)
            start = (shard * files_per_shard + f) * per_file
            table = pa.table({
                "review_id": pa.array([f"S{start + i:012d}" for i in range(per_file)]),
                "label": pa.array(labels.astype(np.int32)),
                "weight": pa.array(np.ones(per_file)),
                "ids": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, (per_file + 1) * max_len, max_len, dtype=np.int32)),
                    pa.array(ids.reshape(-1))),
            })
            pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=50_000)
    vocab = ["<pad>", "<oov>"] + [f"w{i}" for i in range(2, vocab_size)]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    done.write_text(json.dumps({"rows": per_file * shards * files_per_shard}))
    return root


def table_rows(root: Path) -> int:
    return int(json.loads((root / "_DONE").read_text())["rows"])


def train_config(model: dict, workers: int) -> dict:
    """The config dict a rank gets: conf/local.yaml with the bench's model size, 1 epoch."""
    cfg = common.local_config(
        common.WORK / "work" / "lstm", f"lstm.embedding_dim={model['embedding_dim']}",
        f"lstm.units={model['units']}", f"lstm.batch_size={model['batch_size']}",
        "lstm.epochs=1", "lstm.min_steps=0", f"train.workers={workers}",
        "train.launcher=horovodrun",
        f"encode.max_len={model['max_len']}")
    return cfg.to_dict()


def rank_args(root: Path, model: dict, workers: int, steps: int, ckpt_dir: Path) -> dict:
    """hvd_train.train_rank's args for exactly `steps` steps per rank (one epoch).

    train_rows says each shard holds steps × batch_size rows: the trainer derives its steps per
    epoch from these counts and stops after that many batches, whatever the files hold.
    """
    from starscale import hvd_train
    shards = hvd_train.list_shards(str(root / "sequences"), "train")
    per_shard_steps = -(-steps * workers // len(shards))
    rows = {str(s): per_shard_steps * model["batch_size"] for s in shards}
    return {"config": train_config(model, workers), "seq_dir": str(root / "sequences"),
            "vocab_path": str(root / "vocab.txt"), "vocab_size": model["vocab_size"],
            "max_len": model["max_len"], "train_rows": rows, "val_rows": {},
            "class_weights": [1.0] * 5, "ckpt_dir": str(ckpt_dir),
            "fingerprint": f"bench-{time.time_ns()}", "hooks": {}, "hard_exit": True}


def run_horovod(root: Path, model: dict, workers: int, steps: int, tag: str) -> dict:
    """One horovodrun training of `steps` steps per rank; wall time, rank results, peak PSS."""
    ckpt = common.WORK / "work" / f"ckpt_{tag}_{time.time_ns()}"
    ckpt.mkdir(parents=True)
    args = rank_args(root, model, workers, steps, ckpt)
    args_path = ckpt / "_run_args.json"
    args_path.write_text(json.dumps(args))
    exe = Path(sys.executable).parent / "horovodrun"
    cmd = [str(exe), "-np", str(workers), "--gloo", "-H", f"localhost:{workers}",
           "--start-timeout", "120", sys.executable, "-m", "starscale.hvd_train", str(args_path)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with common.PeakMemory(root=proc.pid, include_root=False, per_process=True) as mem:
        output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    result_path = ckpt / "_run_args.result.json"
    if proc.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"horovodrun exited with {proc.returncode}:\n{output[-4000:]}")
    results = json.loads(result_path.read_text())
    ranks = [v["peak"] for v in mem.per_pid.values()
             if "starscale.hvd_train" in v["cmd"] and "horovodrun" not in v["cmd"]
             and not v["cmd"].startswith(("/bin/sh", "sh ", "bash"))]
    train_seconds = max(r["train_seconds"] for r in results)
    samples = sum(r["rows_seen"] for r in results)
    subprocess.run(["rm", "-rf", str(ckpt)], check=False)
    return {"wall_seconds": seconds, "train_seconds": train_seconds, "samples": samples,
            "samples_per_s": samples / train_seconds,
            "rank_peak_mib": [round(x / common.MIB, 1) for x in sorted(ranks, reverse=True)[:workers]],
            "tree_peak_mib": mem.mib()["total"]}


def run_study(root: Path, model: dict, steps: int, max_rows: int | None = None) -> dict:
    """The study's fit in a fresh Python process (its own TF, its own memory); its report."""
    spec = {"root": str(root), "model": model, "steps": steps, "max_rows": max_rows}
    proc = subprocess.Popen([sys.executable, __file__, "study", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with common.PeakMemory(root=proc.pid) as mem:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"study fit failed:\n{err[-4000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    report["peak_mib"] = mem.mib()["total"]
    return report


def load_arrays(root: Path, max_rows: int | None):
    """Every train row (or the first max_rows) as (ids int32 [n, max_len], labels int64)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from starscale import hvd_train
    files = [f for fs in hvd_train.list_shards(str(root / "sequences"), "train").values() for f in fs]
    ids, labels, n = [], [], 0
    for f in files:
        table = pq.read_table(f, columns=["label", "ids"])
        flat = pc.list_flatten(table.column("ids")).to_numpy()
        ids.append(flat.astype(np.int32).reshape(table.num_rows, -1))
        labels.append(table.column("label").to_numpy().astype(np.int64))
        n += table.num_rows
        if max_rows and n >= max_rows:
            break
    X, y = np.concatenate(ids), np.concatenate(labels)
    return (X[:max_rows], y[:max_rows]) if max_rows else (X, y)


def study_main(spec: dict) -> None:
    """Child process: load the table into memory, model.fit on steps × batch_size rows."""
    import numpy as np
    from tensorflow import keras
    from starscale import lstm
    root, model, steps = Path(spec["root"]), spec["model"], int(spec["steps"])
    keras.utils.set_random_seed(42)
    load_started = time.perf_counter()
    X, y = load_arrays(root, spec.get("max_rows"))
    Y = np.eye(5, dtype=np.float32)[y]
    load_seconds = time.perf_counter() - load_started
    n = steps * model["batch_size"]
    net = lstm.build_model(model["vocab_size"], model["max_len"],
                           embedding_dim=model["embedding_dim"], units=model["units"],
                           spatial_dropout=0.2, seed=42)
    lstm.compile_model(net, lstm.make_optimizer(1e-3))

    _, seconds, steady = lstm.timed_fit(net, X[:n], Y[:n], batch_size=model["batch_size"],
                                        epochs=1, shuffle=True, verbose=0)
    print(json.dumps({"rows_loaded": int(len(y)), "load_seconds": load_seconds,
                      "train_seconds": seconds, "samples": n, "samples_per_s": n / seconds,
                      "samples_per_s_after_first_batch":
                          (n - model["batch_size"]) / steady if steady else n / seconds}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "study":
        study_main(json.loads(sys.argv[2]))
    else:
        print("usage: python bench/lstm_common.py study SPEC_JSON", file=sys.stderr)
        raise SystemExit(2)
