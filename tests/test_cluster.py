"""Cluster mode for real: spark-submit to a Spark standalone cluster (master + 2 workers) on
127.0.0.1, started and stopped by the test (starscale.cluster) with its own run dir and free ports.

1. A ~2.5k-row synthetic corpus through the experiment job (make-corpus → ingest → prepare →
   sample → encode → train-lr → train-lstm with 2 Horovod ranks as Spark tasks → report) on the
   cluster; the data stages' tables must equal those of the same stages run in local mode.
2. A worker JVM is SIGKILLed while a make-corpus task runs on it: Spark reruns the lost tasks on
   the other worker and the corpus bytes equal a clean local run's.
3. The worker running Horovod rank 0, then rank 1's, is SIGKILLed during training: the job fails
   (does not hang) with a "train-lstm: training failed: ..." message, and a rerun resumes from
   the last checkpoint.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import (REPO, build_package, cluster_test_config, finish, make_config,
                           spark_submit_command, submit_env)

# The same data and model settings in both modes (tiny: 2 cores shared by several people).
PIPELINE = [
    "corpus.rows=2500", "corpus.partitions=4", "corpus.part_files=2",
    "ladder.sizes=[1000, full]", "sample.size=full", "sample.method=random_over",
    "encode.vocab_size=2000", "encode.max_len=20", "encode.shards=2", "encode.tfidf_features=500",
    "encode.tfidf_ngram_max=2",
    "lr.engine=mllib", "lr.max_iter=20",
    "lstm.embedding_dim=16", "lstm.units=8", "lstm.batch_size=64", "lstm.shuffle_buffer=256",
    "lstm.epochs=2", "lstm.early_stopping_patience=0", "lstm.learning_rate=0.01",
    "lstm.min_steps=0", "lr.reg_grid=[]", "experiment.seeds=1",
    "evaluate.bootstrap=20", "report.bootstrap=50",
    "train.workers=2", "train.start_timeout_s=180", "train.stall_timeout_s=120",
    # the experiment job's grid: one cell (full train split, random_over), LR + LSTM
    "experiment.sizes=[full]", "experiment.samplers=[random_over]", "experiment.models=[lr, lstm]",
    "experiment.lr_engines=[mllib]", "experiment.lr_features=[{features: 500, hashed: false}]",
]
DATA_STAGES = ["make-corpus", "ingest", "prepare", "sample", "encode"]

# The driver program spark-submit runs: the listed stages in one application (one session),
# each through pipeline.runner.run_stage like jobs/<stage>.py. train-lstm pins Horovod's driver-side servers
# to train.bind_host (the executor side is pinned by the daemon module in conf/standalone.yaml).
DRIVER = '''
import json, sys
from starscale import cli
from starscale.pipeline.runner import run_stage
from starscale.config import load_config
from starscale.spark import build_session
stages = sys.argv[1].split(",")
conf, sets = [], []
for flag, value in zip(sys.argv[2::2], sys.argv[3::2]):
    (conf if flag == "--conf" else sets).append(value)
cfg = load_config(conf, sets)
spark = build_session(cfg.spark, "cluster-test")
print("APP " + spark.sparkContext.applicationId, flush=True)
for stage in stages:
    summary = run_stage(stage, cfg, spark=spark)
    print("SUMMARY " + json.dumps(cli._brief(summary), default=str), flush=True)
spark.stop()
'''


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A master + 2 workers on 127.0.0.1 with free ports; always stopped at teardown."""
    from starscale import cluster
    cfg = cluster_test_config(tmp_path_factory.mktemp("standalone"), 2, 1, "3g")
    try:
        url = cluster.up(cfg)
        yield cfg, url
    finally:
        stopped = cluster.down(cfg.run_dir)
        print(f"cluster down: {stopped}")


@pytest.fixture(scope="module")
def code_zip(tmp_path_factory) -> Path:
    """The --py-files zip, built by `make package` (into a temporary dist: dist/ is shared)."""
    return build_package(tmp_path_factory.mktemp("zip"))


def _driver_command(master: str, code_zip: Path, tmp: Path, stages: list[str], conf_file: Path,
                    sets: list[str], *, driver_memory: str,
                    conf: dict[str, str] | None = None) -> list[str]:
    """The one spark-submit of the DRIVER: the stages, the overlay and --set items."""
    tmp.mkdir(parents=True, exist_ok=True)
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    script_args = [",".join(stages), "--conf", str(conf_file)]
    for item in sets:
        script_args += ["--set", item]
    return spark_submit_command(master, code_zip, driver, *script_args, conf=conf,
                                driver_memory=driver_memory)


def submit(cluster_cfg, url: str, code_zip: Path, tmp: Path, stages: list[str], sets: list[str],
           *, extra_env: dict | None = None, timeout_s: int = 600, wait: bool = True):
    """spark-submit the DRIVER with conf/standalone.yaml against the test cluster."""
    args = _driver_command(url, code_zip, tmp, stages, REPO / "conf" / "standalone.yaml", sets,
                           driver_memory="1g")
    from starscale import cluster
    # The cluster authenticates (spark.authenticate): the job reads the secret from its file.
    args[1:1] = ["--properties-file", str(cluster.auth_file(cluster_cfg.run_dir))]
    env = submit_env(SPARK_LOCAL_IP=cluster_cfg.host, **(extra_env or {}))
    env.pop("PYSPARK_PYTHON", None)        # the executors' Python comes from spark.python
    log = open(tmp / f"submit-{'_'.join(stages)}-{time.time():.0f}.log", "w+")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc, log
    return finish(proc, log, timeout_s)


def _end_submit(proc, log, cluster_cfg) -> str:
    """After a fault test: stop the spark-submit if it is still running, return its output, and
    restart any killed worker so the next test has both."""
    from starscale import cluster
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.seek(0)
    output = log.read()
    running = cluster._running(Path(cluster_cfg.run_dir))
    for index in range(cluster_cfg.workers):
        if f"worker-{index}" not in running:
            cluster.start_worker(cluster_cfg, index)
    return output


def summaries(output: str) -> dict[str, dict]:
    out = {}
    for line in output.splitlines():
        if line.startswith("SUMMARY "):
            summary = json.loads(line[len("SUMMARY "):])
            out[summary["stage"]] = summary
    return out


def run_local(code_zip: Path, tmp: Path, stages: list[str], sets: list[str]):
    """The same stages in local mode (local[2], conf/local.yaml) through spark-submit too, with
    every listener on 127.0.0.1. Returns (config, {stage: summary})."""
    cfg = make_config(tmp, *sets)
    args = _driver_command("local[2]", code_zip, tmp, stages, REPO / "conf" / "local.yaml",
                           [f"run.output_dir={cfg.run.output_dir}", *sets], driver_memory="2g",
                           conf={"spark.ui.enabled": "false",
                                 "spark.driver.bindAddress": "127.0.0.1",
                                 "spark.driver.host": "127.0.0.1"})
    env = submit_env(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return cfg, summaries(proc.stdout)


def table(path: Path, out_root: Path):
    """A published table as a pandas frame with a stable row order: hive partition columns as
    text, arrays as tuples, this run's output folder removed from paths, sorted by every column."""
    import pyarrow.dataset as ds
    frame = ds.dataset(str(path), format="parquet", partitioning="hive",
                       ignore_prefixes=["_", "."]).to_table().to_pandas()
    for col in frame.columns:
        if str(frame[col].dtype) == "category":
            frame[col] = frame[col].astype(str)
        elif frame[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[col] = frame[col].map(lambda v: tuple(v) if v is not None else None)
    for col in frame.columns:            # paths (source_file, "first seen at ..." details)
        if frame[col].map(lambda v: isinstance(v, str)).any():
            frame[col] = frame[col].map(
                lambda v: v.replace(f"file:{out_root}", "<out>") if isinstance(v, str) else v)
    cols = sorted(frame.columns)
    return frame[cols].sort_values(cols, na_position="first").reset_index(drop=True)


def app_executors_by_worker(cluster_cfg, app_id: str) -> dict[int, list[str]]:
    """Executor ids of app_id each worker ran (finished or running), from the workers' JSON."""
    from starscale import cluster
    out = {}
    for i in range(cluster_cfg.workers):
        state = cluster.worker_state(cluster_cfg, i)
        execs = (state.get("executors") or []) + (state.get("finishedexecutors") or [])
        out[i] = sorted(str(e["id"]) for e in execs if e.get("appid") == app_id)
    return out


# --------------------------------------------------------------------------- 1. pipeline
@pytest.fixture(scope="module")
def cluster_experiment(standalone, code_zip, tmp_path_factory):
    """The experiment job on the cluster, once: the pipeline test checks it, and the rank-lost
    cases train their own LSTM over its published data stages. What the checks read of its
    LSTM is read here, before a rank-lost case replaces that model."""
    cluster_cfg, url = standalone
    tmp = tmp_path_factory.mktemp("cluster-experiment")
    out = tmp / "cluster-out"
    started = time.time()
    stages = ["experiment"]                   # every stage of the grid, then the report
    rc, output = submit(cluster_cfg, url, code_zip, tmp, stages, [*PIPELINE, f"run.output_dir={out}"])
    seconds = time.time() - started
    apps = [line.split()[1] for line in output.splitlines() if line.startswith("APP ")]
    lstm = sorted(out.glob("models/lstm/*/_MANIFEST.json"))
    return {"rc": rc, "output": output, "stages": stages, "out": out, "seconds": seconds,
            "per_worker": app_executors_by_worker(cluster_cfg, apps[0]) if apps else {},
            "lstm": {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in lstm},
            "lstm_weights": [p.relative_to(out).as_posix() for p in out.glob("models/lstm/*/weights.npz")]}


@pytest.mark.slow
def test_pipeline_on_standalone_equals_local(cluster_experiment, code_zip, tmp_path):
    out_cluster, output, stages = (cluster_experiment[k] for k in ("out", "output", "stages"))
    assert cluster_experiment["rc"] == 0, output[-6000:]
    assert list(summaries(output)) == stages, output[-3000:]
    cluster_seconds = cluster_experiment["seconds"]
    # Both workers ran executors of the application (1 core each: the 2 Horovod ranks, which
    # run at the same time, necessarily ran on different workers).
    per_worker = cluster_experiment["per_worker"]
    assert len(per_worker) == 2 and all(per_worker[i] for i in range(2)), per_worker

    started = time.time()
    local_cfg, _ = run_local(code_zip, tmp_path / "local", DATA_STAGES, PIPELINE)
    local_seconds = time.time() - started
    out_local = Path(local_cfg.run.output_dir)
    print(f"cluster pipeline {cluster_seconds:.0f}s, local data stages {local_seconds:.0f}s")

    def manifest(root: Path, rel: str) -> dict:
        return json.loads((root / rel / "_MANIFEST.json").read_text())

    # ingest: the same counts per file and the same rows and quarantine
    m_c, m_l = manifest(out_cluster, "ingest"), manifest(out_local, "ingest")
    assert m_c["counts"] == m_l["counts"] and m_c["totals"] == m_l["totals"]
    assert m_c["counts"]["reviews"] + m_c["counts"]["quarantine"] == 2500
    for rel in ("ingest/reviews", "ingest/quarantine", "prepare/reviews", "prepare/quarantine"):
        a, b = table(out_cluster / rel, out_cluster), table(out_local / rel, out_local)
        assert len(a) == len(b) and a.equals(b), rel
    # split assignment and ladder quotas
    assert manifest(out_cluster, "prepare")["counts"] == manifest(out_local, "prepare")["counts"]
    assert manifest(out_cluster, "prepare")["ladder"] == manifest(out_local, "prepare")["ladder"]
    # the resampled train set
    tag = local_cfg.sample_tag()
    a = table(out_cluster / "sample" / tag / "train", out_cluster)
    b = table(out_local / "sample" / tag / "train", out_local)
    assert len(a) > 0 and a.equals(b)
    assert (manifest(out_cluster, f"sample/{tag}")["class_counts_after"]
            == manifest(out_local, f"sample/{tag}")["class_counts_after"])
    # the encoded shards: vocabulary and every split/shard's rows
    enc = Path("encode") / local_cfg.encode_tag()
    assert (out_cluster / enc / "vocab.txt").read_text() == (out_local / enc / "vocab.txt").read_text()
    a = table(out_cluster / enc / "sequences", out_cluster)
    b = table(out_local / enc / "sequences", out_local)
    assert len(a) > 0 and a.equals(b)
    assert manifest(out_cluster, str(enc))["rows"] == manifest(out_local, str(enc))["rows"]

    # both models trained on the cluster (published with manifests), and the report was written
    lr = manifest(out_cluster, f"models/lr_mllib/{local_cfg.encode_tag()}")
    assert 0.0 <= lr["score"] <= 1.0 and lr["test_rows"] == 250
    lstm = cluster_experiment["lstm"][f"models/lstm/{local_cfg.sample_tag()}/_MANIFEST.json"]
    assert lstm["workers"] == 2 and lstm["epochs_completed"] == 2, lstm
    assert lstm["launcher"] == "spark" and lstm["test_rows"] == 250
    assert cluster_experiment["lstm_weights"] == [f"models/lstm/{local_cfg.sample_tag()}/weights.npz"]
    assert (out_cluster / "report" / "index.html").is_file()
    assert (out_cluster / "report" / "_MANIFEST.json").is_file()


# --------------------------------------------------------------------------- 2. worker lost
def _driver_ui_json(port: int, path: str):
    from starscale import cluster
    return cluster.get_json(f"http://127.0.0.1:{port}/api/v1/applications{path}")


@pytest.mark.slow
def test_worker_killed_during_data_stage(standalone, code_zip, tmp_path):
    """SIGKILL worker 0 while one of its executor's make-corpus tasks runs; the corpus written
    equals a clean local run's, byte for byte."""
    from starscale import cluster
    cluster_cfg, url = standalone
    rows = ["corpus.rows=150000", "corpus.partitions=8", "corpus.part_files=4"]
    ui_port = cluster.free_port()
    out_cluster = tmp_path / "cluster-out"
    proc, log = submit(cluster_cfg, url, code_zip, tmp_path, ["make-corpus"],
                       [*rows, f"run.output_dir={out_cluster}",
                        "spark.conf.spark.ui.enabled='true'", f"spark.conf.spark.ui.port='{ui_port}'"],
                       wait=False)
    killed_executors: list[str] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not killed_executors:
            time.sleep(0.5)
            try:
                apps = _driver_ui_json(ui_port, "")
                execs = _driver_ui_json(ui_port, f"/{apps[0]['id']}/executors")
            except (OSError, IndexError, ValueError):
                continue
            on_worker0 = {str(e["id"]) for e in cluster.running_executors(cluster_cfg, 0)}
            busy = [str(e["id"]) for e in execs
                    if str(e["id"]) in on_worker0 and e.get("activeTasks", 0) > 0]
            if busy:
                cluster.kill_worker(cluster_cfg.run_dir, 0)
                killed_executors = busy
        assert killed_executors, "no task ran on worker 0 before the job ended"
        rc = proc.wait(timeout=600)
    finally:
        output = _end_submit(proc, log, cluster_cfg)
    assert rc == 0, output[-6000:]
    assert "make-corpus" in summaries(output)

    local_cfg, _ = run_local(code_zip, tmp_path / "local", ["make-corpus"], rows)
    out_local = Path(local_cfg.run.output_dir)
    names = sorted(p.name for p in (out_local / "corpus").glob("part-*"))
    assert names and names == sorted(p.name for p in (out_cluster / "corpus").glob("part-*"))
    for name in names:
        assert (out_cluster / "corpus" / name).read_bytes() == (out_local / "corpus" / name).read_bytes(), name


# --------------------------------------------------------------------------- 3. Horovod rank lost
def _worker_hosting_rank(run_dir: str, rank: int) -> int:
    """Index of the standalone worker whose executor runs Horovod rank `rank` (the rank process
    descends from the executor JVM, which descends from the worker JVM)."""
    import psutil
    from starscale import cluster
    workers = {pid: int(name.split("-")[1])
               for name, pid in cluster._running(Path(run_dir)).items() if name.startswith("worker-")}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "horovod.spark.task.gloo_exec_fn" not in cmd:
            continue
        try:
            if proc.environ().get("HOROVOD_RANK") != str(rank):
                continue
            for parent in proc.parents():
                if parent.pid in workers:
                    return workers[parent.pid]
        except psutil.Error:
            continue
    raise AssertionError(f"no process of Horovod rank {rank} under a worker of {run_dir}")


@pytest.fixture(scope="module")
def cluster_data(cluster_experiment):
    """The experiment's published data stages (the same PIPELINE settings), for both cases
    below: each trains its own LSTM over them."""
    assert cluster_experiment["rc"] == 0, "the experiment on the cluster failed: see the pipeline test"
    out = cluster_experiment["out"]
    sets = [*PIPELINE, f"run.output_dir={out}", "lstm.epochs=4", "train.stall_timeout_s=60",
            "train.start_timeout_s=120"]
    return out, sets


@pytest.mark.slow
# Both cases: the killed worker hosted rank 0 or rank 1. Killing rank 1's worker once hung the
# job (the surviving rank 0 recorded the failure, then deadlocked in tf.data's teardown while
# exiting): ranks now exit at once on failure, and the driver cancels the job
# train.failure_grace_s after a recorded failure whatever the ranks do.
@pytest.mark.parametrize("lost_rank", [0, 1])
def test_worker_killed_during_horovod_training(standalone, code_zip, cluster_data, tmp_path,
                                               lost_rank):
    """Kill the worker running rank `lost_rank` once rank 0 has written a checkpoint: the stage
    fails (does not hang) with a clear message; the rerun resumes from the checkpoint
    (initial_epoch = completed epochs) and finishes."""
    from starscale import cluster
    cluster_cfg, url = standalone
    out, sets = cluster_data
    for done in (out / "checkpoints" / "lstm", out / "models" / "lstm"):   # the experiment's, the other case's
        shutil.rmtree(done, ignore_errors=True)

    from starscale.config import load_config
    tag = load_config(None, [*PIPELINE]).sample_tag()
    state = out / "checkpoints" / "lstm" / tag / "state.json"
    # Test hook read by the driver and handed to every rank: a pause after each epoch's
    # checkpoint, so the kill lands between checkpoints of a run that is still training.
    hooks = {"STARSCALE_TRAIN_HOOKS": json.dumps({"epoch_sleep_s": 4})}
    proc, log = submit(cluster_cfg, url, code_zip, tmp_path, ["train-lstm"], sets,
                       extra_env=hooks, wait=False)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not state.exists():
            time.sleep(0.5)
        assert state.exists(), "no checkpoint before the job ended"
        lost_worker = _worker_hosting_rank(cluster_cfg.run_dir, lost_rank)
        cluster.kill_worker(cluster_cfg.run_dir, lost_worker)
        killed_at = time.time()
        # Bounded: the ranks' stall watchdog (60 s here) or the driver's failure grace (60 s).
        rc = proc.wait(timeout=300)
        failed_after = time.time() - killed_at
    finally:
        output = _end_submit(proc, log, cluster_cfg)
    print(f"train-lstm failed {failed_after:.0f}s after the kill of rank {lost_rank}'s worker")
    assert rc != 0, output[-4000:]
    assert "train-lstm: training failed" in output, output[-4000:]
    completed = json.loads(state.read_text())["completed_epochs"]
    assert 1 <= completed < 4

    rc, output = submit(cluster_cfg, url, code_zip, tmp_path, ["train-lstm"], sets)
    assert rc == 0, output[-6000:]
    summary = summaries(output)["train-lstm"]
    assert summary["initial_epoch"] == completed and summary["epochs_completed"] == 4, summary


# --------------------------------------------------------------------------- quick checks (no JVM)
def test_standalone_overlay_loads_and_stays_on_loopback():
    from starscale.config import load_config
    cfg = load_config([str(REPO / "conf" / "standalone.yaml")])
    assert cfg.spark.master is None and cfg.spark.python == ".venv/bin/python"
    assert cfg.spark.conf["spark.driver.host"] == cfg.spark.conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert cfg.spark.conf["spark.executorEnv.STARSCALE_HOROVOD_BIND"] == "127.0.0.1"
    assert (cfg.train.launcher, cfg.train.workers, cfg.encode.shards) == ("spark", 2, 2)
    assert cfg.train.nics == ["lo"] and cfg.train.bind_host == "127.0.0.1"


def test_executor_python_paths(tmp_path, monkeypatch):
    from starscale.spark import executor_python
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    monkeypatch.chdir(tmp_path)
    assert executor_python(".venv/bin/python") == f"{tmp_path}/.venv/bin/python"
    assert executor_python("./env/bin/python") == "./env/bin/python"   # inside --archives env
    assert executor_python("/opt/py/bin/python") == "/opt/py/bin/python"
    assert executor_python(None) is None


def test_pin_horovod_services_binds_only_that_address():
    import horovod.runner.common.util.network as common_network
    import horovod.runner.http.http_server as http_server
    import horovod.runner.util.network as util_network
    from horovod.runner.common.util import secret
    from starscale import loopback
    saved = [(m, m.find_port) for m in (util_network, common_network, http_server)]
    try:
        loopback.pin_horovod_services("iface:lo")
        assert loopback.pinned_host() == "127.0.0.1"
        service = common_network.BasicService("probe", secret.make_secret_key(), nics={"lo"})
        try:
            assert service._server.socket.getsockname()[0] == "127.0.0.1"
        finally:
            service.shutdown()
        rendezvous = http_server.RendezvousServer()
        rendezvous.start()
        try:
            assert rendezvous._httpd.socket.getsockname()[0] == "127.0.0.1"
        finally:
            rendezvous.stop()
    finally:
        for module, original in saved:
            module.find_port = original


def test_cluster_up_authenticates_with_a_0600_secret_never_in_argv(tmp_path, monkeypatch):
    """up() writes a fresh per-cluster secret (0600) and hands it to the master and the workers
    as a properties file; down() removes it. (The slow tests above submit with it.)"""
    import stat
    from starscale import cluster
    from starscale.config import load_config
    started = []
    monkeypatch.setattr(cluster, "_start", lambda name, args, run_dir, env:
                        started.append((name, args, env)) or 0)
    monkeypatch.setattr(cluster, "wait_for", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "_wait_registered", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "_port_open", lambda host, port: False)
    cfg = load_config(None, [f"cluster.run_dir={tmp_path}", "cluster.workers=2"]).cluster
    cluster.up(cfg)
    auth = cluster.auth_file(tmp_path)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    lines = auth.read_text().splitlines()
    assert lines[0] == "spark.authenticate true" and lines[1].startswith("spark.authenticate.secret ")
    secret_value = lines[1].split(" ", 1)[1]
    assert len(secret_value) == 64
    assert [name for name, _, _ in started] == ["master", "worker-0", "worker-1"]
    for _, args, env in started:
        assert args[-2:] == ["--properties-file", str(auth)]
        assert secret_value not in " ".join(args) and secret_value not in " ".join(env.values())
    first = secret_value
    cluster.down(str(tmp_path))
    assert not auth.exists()
    cluster.up(cfg)
    assert cluster.auth_file(tmp_path).read_text().splitlines()[1].split(" ", 1)[1] != first


AUTH_PROBE = '''
from pyspark.sql import SparkSession
spark = (SparkSession.builder.appName("auth-probe").config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1").config("spark.ui.enabled", "false")
         .config("spark.executor.memory", "512m").getOrCreate())
print("SUM", spark.sparkContext.parallelize(range(10), 2).sum())
spark.stop()
'''


@pytest.mark.slow
def test_the_cluster_refuses_a_job_without_its_secret(standalone, tmp_path):
    """With SPARK_CONF_DIR (the cluster's secret as spark-defaults) a job runs; without, the
    master refuses it (SASL authentication)."""
    from starscale import cluster
    cfg, url = standalone
    probe = tmp_path / "probe.py"
    probe.write_text(AUTH_PROBE)
    submit_cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", url, str(probe)]
    env = submit_env(SPARK_LOCAL_IP=cfg.host, PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_CONF_DIR", None)
    # Both at once: the refused one spends a minute in Spark's registration retries (3 × 20 s).
    with_secret = {"SPARK_CONF_DIR": str(cluster.auth_file(cfg.run_dir).parent)}
    with ThreadPoolExecutor(2) as pool:
        ok, refused = pool.map(lambda extra: subprocess.run(
            submit_cmd, env={**env, **extra}, capture_output=True, text=True, timeout=300),
            [with_secret, {}])
    assert "SUM 45" in ok.stdout, ok.stderr[-3000:]
    assert refused.returncode != 0 and "SUM 45" not in refused.stdout
    assert "SASL" in refused.stderr, refused.stderr[-3000:]
