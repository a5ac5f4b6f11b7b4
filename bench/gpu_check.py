"""make gpu-check: does this node's GPU path work, and how fast is the LSTM on it? (issue 13)

Under 5 minutes on one GPU, no network. In order:
  0. probe (a child process): the TensorFlow build, the GPUs it sees, horovod's NCCL/Gloo. No GPU →
     print "no GPU present", write the JSON (gpu: false) and exit 0 (EXIT_NO_GPU); nothing else runs.
  a. the study's LSTM (vocab 20k, embedding 300, LSTM 64, length 100) on synthetic rows on one GPU,
     through bench/gpu_smoke.py in a fresh process per case: batch 128 and 1024, float32 and mixed
     precision; samples/s after the first batch, whether cuDNN ran, and one 9M-row epoch projected.
  b. two Horovod ranks through horovod.spark.run under local Spark (local[2]), sharing the GPU(s):
     a short epoch each, gradients allreduced (sparse_as_dense); both ranks must end with the same
     weights. NCCL refuses two ranks on one GPU, so with fewer GPUs than ranks every collective
     goes through host memory (Gloo): the allreduce (device_dense=/cpu:0) and the broadcast of
     rank 0's weights (host copies), and the check says so; with one GPU per rank both are NCCL's.
  c. this process (the Spark driver) hid its GPUs (training.devices.hide_gpus_in_driver) before
     its first TF use: nvidia-smi must list no GPU memory for its PID, and TF here no GPU device.
Prints one table and writes docs/bench/gpu_check.json (docs/benchmarks.md section 8).

    python bench/gpu_check.py                 # on a GPU node (make gpu-check GPU=1)
    python bench/gpu_check.py --quick --force-cpu   # every part on the CPU, tiny sizes (the test)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "gpu_check"
EXIT_NO_GPU = 0          # no GPU is not a failure of the check: it says so and exits 0
EPOCH_ROWS = 9_002_021   # Wireless v1_00, the full experiment's corpus
PROBE = ("import json; from starscale.training.devices import stack_report; "
         "print('PROBE ' + json.dumps(stack_report(), default=str))")


def probe() -> dict:
    """The stack as a child process sees it (this process must not initialise a GPU)."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=common.REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"probing TensorFlow failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("PROBE "):])


# --------------------------------------------------------------------------- a. one GPU
def throughput(rows: int, batches: list[int], tiny: bool) -> list[dict]:
    """gpu_smoke.py per (batch size, precision) → samples/s and the projected 9M-row epoch."""
    out = []
    for batch in batches:
        for mixed in (False, True):
            extra = ["--rows", str(rows), "--batch-size", str(batch)]
            extra += ["--embedding-dim", "16", "--units", "8"] if tiny else []
            extra += ["--mixed-precision"] if mixed else []
            proc = subprocess.run([sys.executable, str(Path(__file__).parent / "gpu_smoke.py"),
                                   *extra], capture_output=True, text=True, cwd=common.REPO)
            if proc.returncode != 0:
                raise RuntimeError(f"gpu_smoke.py {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
            text = proc.stdout
            run = json.loads(text[text.index("{"):text.rindex("}") + 1])
            rate = run["samples_per_s_after_first_batch"] or run["samples_per_s"]
            out.append({"part": "a", "case": f"1 GPU, batch {batch}, "
                        f"{'mixed' if mixed else 'float32'}", "device": run["device"],
                        "cudnn_in_use": run["cudnn_in_use"], "samples_per_s": round(rate, 1),
                        "epoch_9m_minutes": round(EPOCH_ROWS / rate / 60, 1), "run": run})
    return out


# --------------------------------------------------------------------------- b. two ranks
def collectives(gpus: int, local_size: int, force_cpu: bool, nccl_built: bool) -> dict:
    """How part b's ranks on one host exchange tensors: with GPUs in use but fewer than the ranks,
    two ranks share a GPU, which NCCL refuses (a communicator cannot hold one device twice), so
    every collective goes through host memory. → {"shared_gpu", "collectives", "note"}."""
    on_gpu = gpus > 0 and not force_cpu
    shared = on_gpu and gpus < local_size
    way = "host (gloo)" if shared or not on_gpu else ("nccl" if nccl_built else "gloo")
    note = (f"{local_size} ranks share {gpus} GPU(s) on this host: NCCL refuses two ranks on one "
            f"GPU, so the allreduce and the weights' broadcast go through host memory (Gloo)"
            if shared else "")
    return {"shared_gpu": shared, "collectives": way, "note": note}


def broadcast_on_host(variables, root_rank: int) -> None:
    """rank root_rank's values into variables, copied through host memory (Gloo), never NCCL."""
    import tensorflow as tf
    import horovod.tensorflow as hvd_tf
    with tf.device("/cpu:0"):
        for i, var in enumerate(variables):
            var.assign(hvd_tf.broadcast(tf.constant(var.numpy()), root_rank,
                                        name=f"gpu_check.var{i}"))


def rank_fn(spec: dict) -> dict:
    """One Horovod rank (a Spark task's child): the LSTM on synthetic rows for spec['steps']
    steps; returns its device, samples/s and a weights checksum. Module level: Horovod pickles
    it into the task."""
    import numpy as np
    import tensorflow as tf
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    from starscale import lstm

    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and not spec["force_cpu"]:
        gpu = gpus[hvd.local_rank() % len(gpus)]          # ranks share when GPUs < ranks
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    elif gpus:
        tf.config.set_visible_devices([], "GPU")
    way = collectives(len(gpus), hvd.local_size(), spec["force_cpu"], bool(hvd.nccl_built()))
    if way["note"] and hvd.local_rank() == 0:
        print(f"gpu-check b: {way['note']}", file=sys.stderr, flush=True)
    shared = way["shared_gpu"]
    tf.keras.utils.set_random_seed(spec["seed"])
    rows = spec["batch_size"] * spec["steps"]
    rng = np.random.default_rng(spec["seed"] + hvd.rank())
    labels = rng.integers(0, 5, size=rows)
    ids = rng.integers(2, spec["vocab"], size=(rows, spec["max_len"]), dtype=np.int32)
    data = (tf.data.Dataset.from_tensor_slices((ids, np.eye(5, dtype=np.float32)[labels]))
            .batch(spec["batch_size"]).prefetch(tf.data.AUTOTUNE))
    model = lstm.build_model(spec["vocab"], spec["max_len"], embedding_dim=spec["embedding_dim"],
                             units=spec["units"], mixed_precision=spec["mixed_precision"],
                             seed=spec["seed"])
    # Horovod: allreduce; through host memory when two ranks share a GPU (NCCL refuses that).
    optimizer = hvd.DistributedOptimizer(lstm.make_optimizer(1e-3), sparse_as_dense=True,
                                         device_dense="/cpu:0" if shared else "")
    lstm.compile_model(model, optimizer, mixed_precision=spec["mixed_precision"])
    model.optimizer.build(model.trainable_variables)
    if way["collectives"] == "host (gloo)":      # (also on CPU, where it is the same thing)
        broadcast_on_host(model.variables, root_rank=0)
    else:
        hvd_tf.broadcast_variables(model.variables, root_rank=0)
    started = time.time()
    history = model.fit(data, epochs=1, verbose=0)
    seconds = time.time() - started
    return {"rank": hvd.rank(), "size": hvd.size(), "local_rank": hvd.local_rank(),
            "device": tf.config.list_logical_devices("GPU")[0].name
            if tf.config.list_logical_devices("GPU") else "CPU",
            "shared_gpu": shared, "allreduce": way["collectives"], "note": way["note"],
            "rows": rows, "seconds": round(seconds, 2), "samples_per_s": round(rows / seconds, 1),
            "loss": float(history.history["loss"][-1]), "checksum": lstm.weights_checksum(model),
            "pid": os.getpid()}


def two_ranks(spec: dict) -> dict:
    """Rank results from horovod.spark.run on a local[2] session (this process is the driver)."""
    import horovod.spark
    spark = common.spark_session()
    try:
        started = time.time()
        ranks = horovod.spark.run(rank_fn, args=(spec,), num_proc=2, use_gloo=True,
                                  start_timeout=120, verbose=0)
        seconds = time.time() - started
    finally:
        spark.stop()
    same = len({r["checksum"] for r in ranks}) == 1
    return {"part": "b", "case": "2 ranks, horovod.spark.run, local[2]",
            "device": " / ".join(r["device"] for r in ranks), "allreduce": ranks[0]["allreduce"],
            "note": ranks[0]["note"],
            "samples_per_s": round(sum(r["samples_per_s"] for r in ranks), 1),
            "same_weights": same, "seconds": round(seconds, 1), "ranks": ranks, "ok": same}


# --------------------------------------------------------------------------- c. the driver
def driver_gpu_memory(pid: int) -> dict:
    """GPU memory nvidia-smi lists for pid (MiB; 0: none) and the GPUs TF shows this process."""
    import tensorflow as tf
    logical = [d.name for d in tf.config.list_logical_devices("GPU")]
    smi = shutil.which("nvidia-smi")
    used = None
    if smi:
        proc = subprocess.run([smi, "--query-compute-apps=pid,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True)
        used = sum(int(float(mem)) for line in proc.stdout.splitlines() if line.strip()
                   for p, mem in [line.split(",")[:2]] if int(p) == pid)
    return {"part": "c", "case": "driver process", "device": ", ".join(logical) or "no GPU visible",
            "driver_gpu_mib": used, "ok": not logical and (used in (0, None))}


def main(argv: list[str] | None = None) -> int:
    args = common.parser(NAME, __doc__)
    args.add_argument("--rows", type=int, default=None, help="rows per part-a case (default 200000)")
    args.add_argument("--force-cpu", action="store_true",
                      help="run every part on the CPU (to check the script where no GPU is)")
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    from starscale.training.devices import hide_gpus_in_driver
    stack = probe()
    if not stack["gpus"] and not args.force_cpu:
        print(f"gpu-check: no GPU present (TensorFlow {stack['tensorflow']} "
              f"[{stack['tensorflow_dist']}, built with CUDA: {stack['built_with_cuda']}] sees "
              f"none; horovod NCCL: {stack.get('horovod_nccl')}). Nothing measured; run it on a "
              f"GPU node after `make setup-gpu` (make gpu-check GPU=1).")
        common.write_report(args, NAME, [], {"gpu": False, "stack": stack,
                                             "exit_code": EXIT_NO_GPU}, started)
        return EXIT_NO_GPU
    # c. before this process's first TF op: the driver keeps off the GPUs (Spark driver below).
    hidden = hide_gpus_in_driver()
    tiny = args.quick or args.force_cpu
    rows = args.rows or (512 if tiny else 200_000)
    results = throughput(rows, [128, 1024] if not tiny else [128], tiny)
    spec = {"vocab": 2000 if tiny else 20_000, "max_len": 20 if tiny else 100,
            "embedding_dim": 16 if tiny else 300, "units": 8 if tiny else 64,
            "batch_size": 64 if tiny else 1024, "steps": 4 if tiny else 100, "seed": 42,
            "mixed_precision": not tiny, "force_cpu": args.force_cpu}
    results.append(two_ranks(spec))
    results.append({**driver_gpu_memory(os.getpid()), "hidden_before_tf": hidden})
    shown = [{k: ("yes" if v is True else "no" if v is False else v) for k, v in r.items()}
             for r in results]
    common.print_table(shown, ["part", "case", "device", "cudnn_in_use", "samples_per_s",
                                 "epoch_9m_minutes", "allreduce", "driver_gpu_mib", "ok"],
                       f"gpu-check: {stack['tensorflow_dist']} {stack['tensorflow']}, "
                       f"GPUs {stack['gpus']}, horovod NCCL {stack.get('horovod_nccl')}")
    for row in results:
        if row.get("note"):
            print(f"part {row['part']}: {row['note']}")
    ok = all(r.get("ok", True) for r in results)
    common.write_report(args, NAME, results, {"gpu": bool(stack["gpus"]), "stack": stack,
                                              "epoch_rows": EPOCH_ROWS, "ok": ok,
                                              "exit_code": 0 if ok else 1}, started)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
