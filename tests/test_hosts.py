"""Separate hosts on one machine (starscale.hosts): a Spark standalone master host and two worker
hosts, each in its own network namespace on a private /24 (and its own mount and UTS namespace,
in which this checkout and its venvs do not exist), the driver on this machine.

1. `make full-data-train` (spark-submit, client mode) with conf/cluster.yaml + conf/gpu.yaml +
   the hosts' overlay and GPU_DRILL=1: every stage and one cell of each model to a report. The
   four Horovod ranks run on both worker hosts with ./env/bin/python from the shipped archive
   and starscale from the --py-files zip, Gloo on the hosts' veth addresses; every rank took
   the fake GPU Spark assigned its task, no (host, GPU) pair twice, and the report names them.
   A fake secret passed with --set appears in no file of any host, the shared storage or the
   driver's logs.
2. A worker host lost during training: the job fails within train.failure_grace_s with one
   line naming the lost host and rank; nothing published is damaged; the rerun resumes from
   the last checkpoint on the remaining host.
3. Two ranks handed the same (host, GPU) pair fail with the error that names them.

Root only (network namespaces): CI runs as root. Every namespace, veth and the bridge are
removed at the end, and before the start (a killed earlier run's leftovers, same prefix).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, finish, html_tables

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
    reason="separate hosts need root, iproute2 and unshare (CI runs as root)")

PREFIX = "sst"                       # not make cluster-up's "ss": a developer's cluster may be up
SUBNET = "10.213.8.0/24"
NIC = f"{PREFIX}0"

# One small cell of each model through every stage (the experiment job), sized for 2 cores.
ARGS = [
    "corpus.rows=2500", "corpus.partitions=4", "corpus.part_files=2", "ingest.inputs=[]",
    "ladder.sizes=[1000, full]", "encode.vocab_size=2000", "encode.max_len=20",
    "encode.tfidf_features=500", "encode.tfidf_ngram_max=2",
    "lr.engine=mllib", "lr.max_iter=20", "lr.reg_grid=[]",
    "lstm.embedding_dim=16", "lstm.units=8", "lstm.batch_size=32", "lstm.shuffle_buffer=256",
    "lstm.epochs=2", "lstm.early_stopping_patience=0", "lstm.min_steps=0",
    "experiment.seeds=1", "evaluate.bootstrap=20", "report.bootstrap=50",
    "experiment.sizes=[full]", "experiment.samplers=[random_under]",
    "experiment.models=[lr, lstm]", "experiment.lr_engines=[mllib]",
    "experiment.lr_features=[{features: 500, hashed: false}]",
    "train.start_timeout_s=300", "train.stall_timeout_s=300",
    "spark.conf.spark.executor.memory=1g",
]


def _cluster_config(hosts_dir: Path):
    from starscale.config import load_config
    return load_config(None, ["cluster.hosts=3", f"cluster.hosts_dir={hosts_dir}",
                              f"cluster.subnet={SUBNET}", f"cluster.prefix={PREFIX}",
                              "cluster.gpus_per_host=2", "cluster.worker_cores=2",
                              "cluster.worker_memory=6g", "cluster.start_timeout_s=120"]).cluster


@pytest.fixture(scope="module")
def hosts_cluster(tmp_path_factory):
    from starscale import hosts
    cfg = _cluster_config(tmp_path_factory.mktemp("hosts"))
    hosts.down(cfg)                  # a killed earlier run's namespaces, if any
    try:
        url = hosts.up(cfg)
        yield cfg, url
    finally:
        removed = hosts.down(cfg)
        print(f"hosts down: {removed}; unpacked archives removed: "
              f"{_remove_unpacked_envs(Path(cfg.hosts_dir))}")
        assert not hosts.namespaces(PREFIX)


def _remove_unpacked_envs(hosts_dir: Path) -> int:
    """Every executor unpacked the shipped venv (1.9 GB) into its work folder: 12–18 GB per run,
    which pytest would keep for three runs. The executors' logs beside them stay. Returns how
    many were removed."""
    envs = [env for env in hosts_dir.glob("hosts/*/work/*/*/env") if env.is_dir() and not env.is_symlink()]
    for env in envs:
        shutil.rmtree(env, ignore_errors=True)
    return len(envs)


@pytest.fixture(scope="module")
def env_archive() -> Path:
    """The executors' venv-pack archive, as `make package-env` packs it: named for the
    requirements' hash under dist/, so it is packed once per requirements (once per CI run)."""
    proc = subprocess.run(["make", "-s", "package-env"], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if "--archives" in ln][-1]
    path = REPO / line.split()[0]
    assert path.is_file(), line
    return path


def full_data_train(cfg, url: str, archive: Path, dist: Path, conf: list[str], sets: list[str],
                    log: Path, *, drill: bool, env: dict | None = None, wait: bool = True):
    """`make full-data-train` against the hosts (client mode: the driver on this machine)."""
    conf_dir = Path(cfg.hosts_dir) / "conf"
    args = " ".join(f"--set '{s}'" for s in sets)
    overlays = [str(conf_dir / "hosts.yaml"), *([str(conf_dir / "hosts-gpus.yaml")] if drill else [])]
    command = ["make", "-s", "full-data-train", f"SPARK_MASTER={url}",
               f"CONF={' '.join([*conf, *overlays])}",
               f"DIST={dist}", f"PACKAGE_BUILD={dist / 'build'}", f"ENV_ARCHIVE={archive}",
               f"ARGS={args}", *(["GPU_DRILL=1"] if drill else [])]
    run_env = {**os.environ, "SPARK_CONF_DIR": str(conf_dir), **(env or {})}
    for key in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        run_env.pop(key, None)       # the Makefile and the config say which Python runs where
    fh = open(log, "w+")
    proc = subprocess.Popen(command, cwd=REPO, env=run_env, stdout=fh, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc, fh
    return finish(proc, fh, 1500)


def _lstm_ranks(out: Path) -> list[dict]:
    """Every rank's result of the experiment's LSTM cell (the train-lstm manifest)."""
    manifests = sorted(out.glob("models/lstm/*/_MANIFEST.json"))
    assert manifests, f"no LSTM model published under {out}/models/lstm"
    manifest = json.loads(manifests[0].read_text())
    return manifest["ranks"]


def _files_containing(roots: list[Path], needle: bytes) -> list[str]:
    hits = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else [root]:
            if path.is_file() and not path.is_symlink():
                try:
                    if needle in path.read_bytes():
                        hits.append(str(path))
                except OSError:
                    pass
    return hits


# --------------------------------------------------------------------------- 1. the whole path
@pytest.fixture(scope="module")
def whole_path(hosts_cluster, env_archive, tmp_path_factory):
    """One `make full-data-train` with the GPU drill, which both slow tests read: the first
    checks it, the second loses a host while training a new LSTM cell over its data stages
    (unchanged, so not rerun: only the training pays)."""
    cfg, url = hosts_cluster
    tmp = tmp_path_factory.mktemp("whole-path")
    secret = f"FAKE-S3-SECRET-{secrets.token_hex(8)}"
    sets = [*ARGS, f"spark.conf.spark.hadoop.fs.s3a.secret.key={secret}",
            "spark.conf.spark.cores.max=4"]
    rc, output = full_data_train(cfg, url, env_archive, tmp / "dist",
                                 ["conf/cluster.yaml", "conf/gpu.yaml"], sets,
                                 tmp / "full-data-train.log", drill=True)
    out = Path(cfg.hosts_dir) / "shared" / "out"
    report = out / "report" / "index.html"
    # read now: the host-lost test publishes its own LSTM (same sample tag) over this one
    return {"rc": rc, "output": output, "sets": sets, "secret": secret, "tmp": tmp, "out": out,
            "ranks": _lstm_ranks(out) if rc == 0 else [],
            "report": report.read_text() if report.is_file() else None}


@pytest.mark.slow
@pytest.mark.timeout(2400)       # ≈ 8 min on the shared 2-core machine, archive packing included
@NEEDS_ROOT
def test_full_data_train_on_separate_hosts_with_gpu_drill(hosts_cluster, whole_path):
    cfg, _ = hosts_cluster
    hosts_dir = Path(cfg.hosts_dir)
    output, secret, sets, out = (whole_path[k] for k in ("output", "secret", "sets", "out"))
    assert whole_path["rc"] == 0, output[-8000:]
    assert whole_path["report"] is not None

    ranks = sorted(whole_path["ranks"], key=lambda r: r["rank"])
    places = [r["placement"] for r in ranks]
    assert [p["rank"] for p in places] == [0, 1, 2, 3]             # conf/gpu.yaml: 4 ranks
    assert {p["host"] for p in places} == {f"{PREFIX}-w1", f"{PREFIX}-w2"}, places
    pairs = {(p["host"], p["gpu"]) for p in places}
    assert len(pairs) == 4 and {g for _, g in pairs} == {"0", "1"}, places
    for p in places:
        # the shipped interpreter and the zip, not this checkout (hidden on the worker hosts)
        assert p["python"].endswith("/env/bin/python") and str(REPO) not in p["python"], p
        assert ".zip" in p["starscale"] and str(REPO) not in p["starscale"], p
        # Gloo on the hosts' veth: the interface every host has, an address on the /24
        assert p["iface"] == NIC and p["address"].startswith("10.213.8.1"), p
        assert p["rendezvous"] == "10.213.8.1", p
        assert "GPU drill" in p["device"], p
    table = html_tables(whole_path["report"])["rank-placement"]
    assert {(row["host"], row["GPU"]) for row in table} == pairs, table

    # nothing secret in any host's files, the shared storage, the driver's logs or its output
    roots = [hosts_dir, REPO / "out" / "logs", whole_path["tmp"]]
    assert secret.encode() in (" ".join(sets)).encode()
    leaked = _files_containing(roots, secret.encode())
    assert not leaked, leaked
    assert secret not in output


# --------------------------------------------------------------------------- 2. a host lost
@pytest.mark.slow
@pytest.mark.timeout(2400)
@NEEDS_ROOT
def test_a_worker_host_lost_during_training(hosts_cluster, env_archive, whole_path, tmp_path):
    """Kill every process of the host running rank 1 once rank 0 has checkpointed an epoch of a
    new LSTM cell (no GPU drill, 2 ranks) trained over the whole path's published data stages."""
    from starscale import hosts
    cfg, url = hosts_cluster
    assert whole_path["rc"] == 0, "the whole path's run failed: see the test above"
    out = whole_path["out"]
    sets = [*ARGS, f"run.output_dir={out}", "lstm.epochs=4", "train.workers=2",
            "encode.shards=4",                  # the whole path's (conf/gpu.yaml): encode is reused
            "spark.conf.spark.executor.cores=1",
            "spark.conf.spark.cores.max=2", "train.failure_grace_s=30",
            "train.stall_timeout_s=120", "experiment.models=[lstm]"]
    hooks = {"STARSCALE_TRAIN_HOOKS": json.dumps({"epoch_sleep_s": 6})}
    ckpt = out / "checkpoints" / "lstm"
    shutil.rmtree(ckpt, ignore_errors=True)   # the whole path's (same sample tag): done with
    lstm_before = {p: p.read_bytes() for p in out.glob("models/lstm/*/_MANIFEST.json")}
    proc, fh = full_data_train(cfg, url, env_archive, tmp_path / "dist", ["conf/cluster.yaml"],
                               sets, tmp_path / "run1.log", drill=False, env=hooks, wait=False)
    try:
        deadline = time.time() + 1200
        state = None
        while time.time() < deadline and proc.poll() is None:
            states = list(ckpt.glob("*/state.json"))
            placements = list(ckpt.glob("*/_PLACEMENT-*.json"))
            if states and placements:
                state = states[0]
                break
            time.sleep(0.5)
        assert state is not None, "no checkpoint before the job ended"
        placement = json.loads(placements[0].read_text())
        lost = next(p for p in placement if p["rank"] == 1)
        lost_host = lost["host"].split("-", 1)[1]                     # sst-w2 → w2
        published_before = {p: p.read_bytes() for p in out.rglob("_MANIFEST.json")}
        hosts.kill_host(cfg, lost_host)
        killed_at = time.time()
        rc = proc.wait(timeout=600)
        failed_after = time.time() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fh.seek(0)
        output = fh.read()
    print(f"failed {failed_after:.0f}s after host {lost_host} was lost")
    assert rc != 0, output[-6000:]
    lines = [ln for ln in output.splitlines() if "training failed" in ln]
    assert lines, output[-6000:]
    assert f"host {lost['host']}" in lines[-1] and "rank 1" in lines[-1], lines[-1]
    # the data stages were the whole path's, not rerun
    data_lines = [ln for ln in output.splitlines()
                  if ln.startswith(("[experiment] ingest", "[experiment] prepare",
                                    "[experiment] sample", "[experiment] encode"))]
    assert data_lines and all(ln.endswith("(skipped)") for ln in data_lines), data_lines
    # nothing published was damaged: every manifest there before is there, byte for byte, and
    # no LSTM model was published (the whole path's is still the one there)
    for path, raw in published_before.items():
        assert path.read_bytes() == raw, path
    assert {p: p.read_bytes() for p in out.glob("models/lstm/*/_MANIFEST.json")} == lstm_before
    completed = json.loads(state.read_text())["completed_epochs"]
    assert 1 <= completed < 4

    # the rerun resumes on the remaining host (w1 offers 2 cores: both ranks there)
    rc, output = full_data_train(cfg, url, env_archive, tmp_path / "dist", ["conf/cluster.yaml"],
                                 sets, tmp_path / "run2.log", drill=False)
    hosts.start_worker_host(cfg, lost_host)
    assert rc == 0, output[-6000:]
    ranks = _lstm_ranks(out)                # this run's model, published over the whole path's
    assert len(ranks) == 2, ranks
    remaining = {f"{PREFIX}-w1", f"{PREFIX}-w2"} - {lost["host"]}
    assert {r["placement"]["host"] for r in ranks} == remaining, ranks
    assert all(r["initial_epoch"] == completed and r["epochs_completed"] == 4 for r in ranks)


# --------------------------------------------------------------------------- quick checks (no JVM)
def test_unique_gpus_check_names_the_ranks_host_and_gpu():
    from starscale.training.devices import check_unique_gpus
    check_unique_gpus([{"rank": 0, "host": "a", "gpu": "0"}, {"rank": 1, "host": "a", "gpu": "1"},
                       {"rank": 2, "host": "b", "gpu": "0"}, {"rank": 3, "host": "b", "gpu": None}])
    with pytest.raises(ValueError, match=r"ranks 0 and 2 both have GPU 1 on host a"):
        check_unique_gpus([{"rank": 2, "host": "a", "gpu": "1"}, {"rank": 1, "host": "b", "gpu": "1"},
                           {"rank": 0, "host": "a", "gpu": "1"}])


def test_drill_takes_sparks_address_and_keeps_tensorflow_on_the_cpu():
    from starscale.training.devices import gpu_for_rank
    choice = gpu_for_rank(True, 0, 0, ["1"], drill=True)
    assert (choice.index, choice.address) == (None, "1")
    assert gpu_for_rank(True, 3, 0, None, drill=True).address == "3"    # horovodrun: local rank
    with pytest.raises(ValueError, match="spark.task.resource.gpu.amount"):
        gpu_for_rank(True, 0, 0, ["0", "1"], drill=True)
    with pytest.raises(ValueError, match="sees no GPU"):                # without the drill
        gpu_for_rank(True, 0, 0, ["1"])


def test_a_lost_host_is_named_from_the_peer_address_or_sparks_executors():
    from starscale.training.launch import describe_lost, lost_ranks
    places = [{"rank": 0, "host": "sst-w1", "address": "10.213.8.11"},
              {"rank": 1, "host": "sst-w2", "address": "10.213.8.12"},
              {"rank": 2, "host": "sst-w2", "address": "10.213.8.12"}]
    gloo = "rank 0: HorovodInternalError: Connection closed by peer [10.213.8.12]:40213"
    assert describe_lost(lost_ranks(places, gloo, 0)) == "host sst-w2 lost (ranks 1, 2)"
    # a message naming no peer: the hosts Spark has no executor on any more
    assert [p["rank"] for p in lost_ranks(places, "rank 0: timeout", 0,
                                          {"10.213.8.11", "10.213.8.1"})] == [1, 2]
    assert lost_ranks(places, "rank 0: NaN loss", 0) == []
    # the reporting rank's own address in the message does not make its host lost
    assert lost_ranks(places, "rank 0: [10.213.8.11]:5 reset", 0) == []


def test_redacted_argv_hides_every_secret_value():
    from starscale.config import REDACTED, redact_argv
    argv = ["jobs/experiment.py", "--set", "spark.conf.spark.hadoop.fs.s3a.secret.key=S1",
            "--conf", "spark.hadoop.fs.s3a.access.key=S2", "--password", "S3", "--token=S4",
            "--set", "corpus.rows=10"]
    shown = redact_argv(argv)
    assert not any(s in " ".join(shown) for s in ("S1", "S2", "S3", "S4"))
    assert shown[-1] == "corpus.rows=10" and shown[2].endswith(REDACTED)


def test_hosts_config_is_checked():
    from starscale.config import load_config
    for bad, match in (("cluster.subnet=8.8.8.0/24", "private"), ("cluster.subnet=10.1.0.0/16", "/24"),
                       ("cluster.hosts=2", "at least two worker hosts"),
                       ("cluster.prefix=Bad-Prefix", "prefix")):
        with pytest.raises(ValueError, match=match):
            load_config(None, [bad])


def test_each_host_hides_the_checkout_and_resolves_the_others(tmp_path):
    from starscale import hosts
    cfg = _cluster_config(tmp_path)
    driver, planned = hosts.plan(cfg)
    assert driver == "10.213.8.1" and [h.address for h in planned] == [
        "10.213.8.2", "10.213.8.11", "10.213.8.12"]
    assert [h.netns for h in planned] == ["sst-master", "sst-w1", "sst-w2"]
    text = hosts.hosts_file_text(driver, planned)
    assert "10.213.8.12 sst-w2" in text and "10.213.8.1 sst-driver" in text
    assert REPO in hosts.checkout_paths()
    script = hosts._host_script(planned[1], hosts.checkout_paths(), Path("/x/pyspark"),
                                tmp_path / "image" / "spark", ["spark-class", "Worker"], {"A": "1"})
    assert f"mount -t tmpfs -o size=1m,mode=0755 starscale-hidden {REPO}" in script
    assert "exec env -i A=1 spark-class Worker" in script
    if os.geteuid() == 0:
        with pytest.raises(ValueError, match=f"inside {REPO}"):
            hosts.check_prerequisites(_cluster_config(REPO / "out" / "hosts"))
