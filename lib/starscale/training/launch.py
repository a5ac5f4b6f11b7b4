"""Driver side of LSTM training: the ranks' arguments, the three launchers, the failure watch.

train.launcher: spark → horovod.spark.run, one Spark task per worker; horovodrun →
`horovodrun -np N --gloo python -m starscale.hvd_train ARGS.json` started from here (or the
stage itself started under horovodrun: every rank runs train_rank, rank 0 publishes); local →
one process, this one. Every launcher returns every rank's result, sorted by rank.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from starscale import layout, storage
from starscale.config import Config
from starscale.training import bootstrap, checkpoints, data, devices
from starscale.training.hooks import TrainHooks
from starscale.training.rank import RankArgs, train_rank

STAGE = "train-lstm"
RUN_ARGS_FILE = "_run_args.json"


def config_hash(cfg: Config) -> str:
    """What the trained weights depend on besides the encode output (fingerprinted separately):
    lstm.*, the effective worker count, lr scaling/warmup and the seed. Timeouts, the launcher
    as such and evaluate.* are left out, so raising a timeout after a failure still resumes."""
    t = cfg.train
    workers = 1 if t.launcher == "local" else t.workers
    key = json.dumps({"lstm": cfg.section_hash("lstm"), "workers": workers, "scale_lr": t.scale_lr,
                      "warmup_epochs": t.warmup_epochs, "use_gpu": t.use_gpu,
                      "seed": cfg.run.seed}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _class_weights(cfg: Config, encode_manifest: dict, train: dict[int, list[str]],
                   seq_dir: str) -> list[float]:
    if cfg.sample.method == "class_weight" or cfg.lstm.class_weight == "none":
        # sample.method=class_weight already put the balanced class weight in the weight column.
        return [1.0] * data.N_CLASSES
    manifest_weights = encode_manifest.get("class_weights_balanced")
    if isinstance(manifest_weights, dict) and manifest_weights:
        # encode's manifest: {label: weight} over the train rows written (absent class: unused)
        return [float(manifest_weights.get(str(c), 1.0)) for c in range(data.N_CLASSES)]
    return data.class_weight_list(
        data.label_counts([f for fs in train.values() for f in fs], seq_dir))


def _train_shards(cfg: Config, encode_dir: str, encode_manifest: dict, seq_dir: str):
    """{shard: files} and {shard: rows} of the train split, checked against the workers and
    encode's manifest."""
    train = data.list_shards(seq_dir, "train")
    if not train:
        raise ValueError(f"{seq_dir}/split=train: no shards; run the 'encode' stage")
    if len(train) < cfg.train.workers:
        raise ValueError(f"{seq_dir}: {len(train)} train shard(s) for train.workers="
                         f"{cfg.train.workers}; set encode.shards >= train.workers and re-run encode")
    # Row counts from the Parquet footers: exact, cheap, and what the ranks will actually read.
    train_rows = {s: data.count_rows(f, seq_dir) for s, f in train.items()}
    declared = (encode_manifest.get("rows") or {}).get("train")
    if isinstance(declared, dict):
        declared = {int(k): int(v) for k, v in declared.items() if int(v) > 0}
        if declared != train_rows:
            raise ValueError(f"{encode_dir}: manifest rows.train {declared} differs from the "
                             f"Parquet files {train_rows}; re-run encode")
    return train, train_rows


def rank_args(cfg: Config, encode_manifest: dict, hooks: TrainHooks) -> RankArgs:
    """Everything a rank needs, checked here on the driver (pickled into Spark tasks, JSON for
    horovodrun)."""
    # the files of the encode version whose manifest was fingerprinted (storage.resolve): the
    # ranks read these paths and never resolve anything themselves
    encode_dir = storage.resolve(layout.encode_dir(cfg), encode_manifest)
    seq_dir = data.sequences_dir(encode_dir)
    train, train_rows = _train_shards(cfg, encode_dir, encode_manifest, seq_dir)
    data.check_even_shards(train_rows, cfg.train.workers)   # refuse before any rank starts
    val = data.list_shards(seq_dir, "validation")
    val_rows = {s: data.count_rows(f, seq_dir) for s, f in val.items() if f}
    vocab_path = layout.join(encode_dir, layout.VOCAB)
    vocab = storage.read_bytes(vocab_path)
    if vocab is None:
        raise ValueError(f"{vocab_path}: not found; run the 'encode' stage")
    vocab_size = len(vocab.decode("utf-8").splitlines())
    first = next((f for fs_ in train.values() for f in fs_), None)
    max_len = data.first_row_length([first] if first else [], seq_dir) or cfg.encode.max_len
    fingerprint = hashlib.sha256((config_hash(cfg) + storage.fingerprint(encode_manifest))
                                 .encode()).hexdigest()[:16]
    return RankArgs(lstm=cfg.lstm, train=cfg.train, seed=cfg.run.seed, seq_dir=seq_dir,
                    vocab_path=vocab_path, vocab_size=vocab_size, max_len=max_len,
                    train_rows=train_rows, val_rows=val_rows,
                    class_weights=_class_weights(cfg, encode_manifest, train, seq_dir),
                    ckpt_dir=storage.qualify(layout.checkpoints_dir(cfg)),
                    fingerprint=fingerprint, hooks=hooks, hard_exit=True)


def horovodrun_command(workers: int, start_timeout_s: int, args_path: str,
                       nics: list[str] | tuple[str, ...] = ()) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    iface = ["--network-interface", ",".join(nics)] if nics else []
    return [exe if os.path.exists(exe) else "horovodrun", "-np", str(workers), "--gloo",
            "-H", f"localhost:{workers}", "--start-timeout", str(start_timeout_s), *iface,
            sys.executable, "-m", "starscale.hvd_train", args_path]


def in_horovodrun() -> bool:
    """This process is a rank started by horovodrun (the stage run under horovodrun itself)."""
    return "HOROVOD_RANK" in os.environ and "HOROVOD_SIZE" in os.environ


def new_attempt() -> str:
    """A fresh launch id (UTC time, pid, random): names the launch's failure marker."""
    import secrets
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"


def horovodrun_attempt() -> str:
    """The launch id shared by the ranks of one horovodrun job that runs the stage itself: its
    Gloo rendezvous address and port are the same on every rank and new for every job."""
    key = (os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR", "") + ":"
           + os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT", ""))
    return "hvd-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def failure(ckpt_dir: str, exc: BaseException, watch: "FailureWatch | None" = None,
            attempt: str = "", live_hosts=None) -> RuntimeError:
    """The stage's error: the failed rank's recorded reason, else the launcher's exception,
    led by the hosts that were lost and their ranks when that is why (live_hosts: a callable
    giving the hosts the cluster still has executors on, None in local mode; or None to judge
    by the message alone)."""
    info = checkpoints.read_failure(ckpt_dir, attempt)
    reason = info["message"] if info else f"{type(exc).__name__}: {exc}"
    if watch is not None and watch.fired:
        reason += f" ({watch.fired})"
    try:
        placements = checkpoints.read_placement(ckpt_dir, attempt)
    except Exception:                    # noqa: BLE001 — the reason is what matters
        placements = None
    if placements:
        reporter = info.get("rank") if info else None
        lost = lost_ranks(placements, reason, reporter)
        deadline = time.time() + LOST_HOST_WAIT_S
        while not lost and live_hosts is not None and time.time() <= deadline:
            live = live_hosts()
            if live is None:                 # local mode: every rank is on this host
                break
            lost = lost_ranks(placements, reason, reporter, live)
            if not lost:
                time.sleep(1.0)
        if lost:
            reason = f"{describe_lost(lost)}; {reason}"
    return RuntimeError(f"{STAGE}: training failed: {reason}")


LOST_HOST_WAIT_S = 15.0                # how long the driver waits for Spark to notice a lost host


def lost_ranks(placements: list[dict], message: str, reporting_rank: int | None,
               live: set[str] | None = None) -> list[dict]:
    """The placements of ranks whose host is gone: an address of theirs named in the failure
    message (a peer's address in Gloo's "connection closed" error) by another rank, or, with
    live (the hosts the cluster still runs executors on), a host no longer among them."""
    import re
    named = set(re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", message))
    own = {p.get("address") for p in placements if p.get("rank") == reporting_rank}
    lost = [p for p in placements
            if p.get("address") and p["address"] in named - own - {"127.0.0.1"}]
    if not lost and live is not None:
        lost = [p for p in placements if p.get("address")
                and p["address"] not in live and p.get("host") not in live]
    return sorted(lost, key=lambda p: p["rank"])


def describe_lost(lost: list[dict]) -> str:
    """'host X lost (rank 1)' per host, ranks listed."""
    by_host: dict[str, list[int]] = {}
    for p in lost:
        by_host.setdefault(str(p.get("host")), []).append(int(p["rank"]))
    return "; ".join(f"host {host} lost ({'rank' if len(ranks) == 1 else 'ranks'} "
                     f"{', '.join(map(str, ranks))})" for host, ranks in by_host.items())


def spark_executor_hosts() -> set[str] | None:
    """The hosts the Spark application has executors on now (None in local mode, where every
    rank is on this host)."""
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    if sc is None or str(sc.master).startswith("local"):
        return None
    infos = sc._jsc.sc().statusTracker().getExecutorInfos()
    return {str(info.host()) for info in infos}


class FailureWatch:
    """Driver side: once a rank of this launch has recorded a failure (its attempt's
    _FAILURE-<attempt>.json; another run's marker is not read), the launcher gets
    train.failure_grace_s to notice that every rank has ended; past that, `abort` (cancel the
    Spark job, or kill horovodrun) so the stage fails instead of waiting forever on a rank that
    cannot exit (a survivor stuck after its peer's machine died, a hung process). The ranks'
    own stall watchdog covers a rank stuck *before* any failure is recorded."""

    def __init__(self, ckpt_dir: str, grace_s: float, abort, what: str, poll_s: float = 1.0,
                 attempt: str = ""):
        self.ckpt_dir, self.grace_s, self.abort, self.what = ckpt_dir, float(grace_s), abort, what
        self.attempt = attempt
        self.poll_s = poll_s
        self.fired: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="starscale-failure-watch",
                                        daemon=True)

    def __enter__(self) -> "FailureWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            try:
                failed = checkpoints.read_failure(self.ckpt_dir, self.attempt)
            except Exception:                # noqa: BLE001 — storage hiccup: look again
                continue
            if failed:
                break
        else:
            return
        if self._done.wait(self.grace_s):
            return
        self.fired = (f"a rank failed and the others had not exited {self.grace_s:g}s later "
                      f"(train.failure_grace_s): {self.what}")
        print(f"{STAGE}: {self.fired}", file=sys.stderr, flush=True)
        self.abort()


def _local_mode_bind() -> str | None:
    """127.0.0.1 when Spark runs in local mode (every rank on this host), else None: with no
    train.bind_host, Horovod's driver-side servers then still listen on loopback only."""
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    return "127.0.0.1" if sc is not None and str(sc.master).startswith("local") else None


def _cancel_spark_jobs() -> None:
    """Cancel the running Spark jobs (Horovod's ranks are their tasks): Spark kills the tasks'
    Python workers, which takes their task services and rank processes down with them."""
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.cancelAllJobs()


def launch(cfg: Config, args: RankArgs) -> list[dict[str, Any]]:
    """Run train_rank on train.workers ranks with the configured launcher; every rank's result."""
    checkpoints.clear_failure(args.ckpt_dir)
    args = dataclasses.replace(args, attempt=args.attempt or new_attempt())
    launcher = cfg.train.launcher
    if launcher == "local":
        if cfg.train.workers != 1:
            print(f"{STAGE}: launcher local runs 1 process (train.workers={cfg.train.workers} "
                  f"ignored)", file=sys.stderr)
        return [train_rank(dataclasses.replace(args, hard_exit=False))]
    # The driver stays off the GPUs: the ranks are other processes; this one later only loads
    # the final model and scores the test split on its CPU (docs/training.md "On GPUs").
    devices.hide_gpus_in_driver()
    if launcher == "spark":
        return launch_spark(cfg, args)
    return launch_horovodrun(cfg, args)


def launch_spark(cfg: Config, args: RankArgs) -> list[dict[str, Any]]:
    import horovod.spark
    bind_host = cfg.train.bind_host or _local_mode_bind()
    if bind_host:
        from starscale import loopback
        # Horovod: the driver service and Gloo rendezvous listen on this address only.
        loopback.pin_horovod_services(bind_host)
    watch = FailureWatch(args.ckpt_dir, cfg.train.failure_grace_s, _cancel_spark_jobs,
                         "Spark job cancelled", attempt=args.attempt)
    executable, py_files = spark_rank_interpreter()
    try:
        with watch:
            # Horovod: one Spark task per worker; each starts its rank as a new process with
            # the executors' interpreter (not this driver's, which other hosts do not have),
            # running bootstrap.run_rank, which needs nothing of starscale to unpickle.
            return horovod.spark.run(bootstrap.run_rank, args=(py_files, args.to_json()),
                                     num_proc=cfg.train.workers,
                                     start_timeout=cfg.train.start_timeout_s, use_gloo=True,
                                     nics=set(cfg.train.nics) or None,
                                     verbose=1, stdout=sys.stdout, stderr=sys.stderr,
                                     executable=executable)
    except Exception as exc:             # noqa: BLE001 — re-raised with the rank's reason
        raise failure(args.ckpt_dir, exc, watch, args.attempt,
                      live_hosts=spark_executor_hosts) from exc


def spark_rank_interpreter() -> tuple[str, list[str]]:
    """(the executors' Python, the job's --py-files names) for horovod.spark.run's ranks.

    The interpreter is Spark's for the executors (spark.pyspark.python / PYSPARK_PYTHON, e.g.
    ./env/bin/python from the --archives venv, resolved in the task's working directory);
    horovod.spark.run would otherwise start every rank with this driver's sys.executable."""
    import cloudpickle
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    if sc is None:
        raise RuntimeError(f"{STAGE}: train.launcher=spark needs an active SparkSession")
    # bootstrap.run_rank travels by value: the rank unpickles it before starscale is importable
    cloudpickle.register_pickle_by_value(bootstrap)
    executable = sc.getConf().get("spark.pyspark.python") or sc.pythonExec or sys.executable
    py_files = [os.path.basename(p.rstrip("/")) for p in
                (sc.getConf().get("spark.submit.pyFiles") or "").split(",") if p.strip()]
    return executable, py_files


def launch_horovodrun(cfg: Config, args: RankArgs) -> list[dict[str, Any]]:
    """horovodrun from here: args as a JSON file beside the checkpoints (local disk)."""
    local = storage.local_path(args.ckpt_dir)
    if local is None:
        raise ValueError(f"train.launcher=horovodrun needs a local checkpoints dir, got "
                         f"{args.ckpt_dir}")
    os.makedirs(local, exist_ok=True)
    args_path = layout.join(local, RUN_ARGS_FILE)
    with open(args_path, "w") as fh:
        json.dump(args.to_json(), fh)
    result_path = result_file(args_path)
    if os.path.exists(result_path):
        os.remove(result_path)
    cmd = horovodrun_command(cfg.train.workers, cfg.train.start_timeout_s, args_path,
                             cfg.train.nics)
    print(f"{STAGE}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    with FailureWatch(args.ckpt_dir, cfg.train.failure_grace_s, lambda: _stop(proc),
                      "horovodrun stopped", attempt=args.attempt) as watch:
        returncode = proc.wait()
    if returncode != 0 or not os.path.exists(result_path):
        raise failure(args.ckpt_dir, RuntimeError(f"horovodrun exited with {returncode}"), watch,
                      args.attempt)
    with open(result_path) as fh:
        return json.load(fh)


def result_file(args_path: str) -> str:
    """ARGS.json → ARGS.result.json, where horovodrun's rank 0 leaves every rank's result."""
    return args_path.rsplit(".json", 1)[0] + ".result.json"


def _stop(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """SIGTERM horovodrun (it terminates its ranks), SIGKILL if it is still there after wait_s."""
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def gather_results(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Under horovodrun: every rank's result, on every rank (rank 0 uses them)."""
    import horovod.tensorflow as hvd_tf
    return hvd_tf.allgather_object(result, name="rank_results")
