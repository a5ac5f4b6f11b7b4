"""The only SparkSession builder."""
from __future__ import annotations

import os
import sys

from starscale.config import SparkConfig


def executor_python(path: str | None) -> str | None:
    """spark.python as the executors should see it: a relative path that exists here (e.g.
    .venv/bin/python on a one-host cluster) becomes absolute, since executors run in their own
    work dirs; one that does not exist here (./env/bin/python inside a --archives venv, unpacked
    in each executor's work dir) is kept as given."""
    if path and not os.path.isabs(path) and os.path.isfile(path):
        return os.path.abspath(path)
    return path


def cluster_deploy_error(conf: dict[str, str]) -> str | None:
    """Why a driver started by spark-submit with this SparkConf cannot run, or None. starscale's
    jobs run in client deploy mode only: a cluster-mode driver runs on a cluster node, where
    the --conf overlays (files on the submitting machine, which spark-submit does not ship) and
    the driver venv's absolute Python path (which the ranks' commands are built from) do not
    exist. Kubernetes' cluster mode runs spark-submit again inside the driver pod, in client
    mode, marked by spark.kubernetes.submitInDriver."""
    if (conf.get("spark.submit.deployMode", "client") == "cluster"
            or conf.get("spark.kubernetes.submitInDriver", "false") == "true"):
        return ("cluster deploy mode is not supported: the driver would run on a cluster node, "
                "without the --conf overlays and the driver's Python; submit with "
                "--deploy-mode client (docs/cluster.md)")
    return None


def submitted_conf() -> dict[str, str]:
    """The SparkConf spark-submit gave this driver, read from its JVM; {} when no spark-submit
    started this process (python -m starscale builds its own session later)."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext
    SparkContext._ensure_initialized()      # attaches to spark-submit's JVM (no SparkContext yet)
    return dict(SparkConf().getAll())


LOOPBACK_BIND_ENV = "STARSCALE_HOROVOD_BIND"      # = starscale.loopback.BIND_ENV (no horovod import)
WORKER_LOG_ENV = "STARSCALE_WORKER_LOG"           # = starscale.worker.LOG_ENV


def _package_on_disk() -> bool:
    """starscale is importable from a folder (an install or PYTHONPATH), not only from a
    --py-files zip, which Spark adds to sys.path only inside its workers, after the daemon
    module has been imported."""
    import starscale
    return ".zip" not in os.path.abspath(starscale.__file__)


def build_session(spark_cfg: SparkConfig, app_suffix: str = ""):
    """Return a SparkSession for spark_cfg.

    master null: the session takes whatever spark-submit set (cluster mode); a value such as
    local[2] or spark://host:7077 is used as given. The executors' Python is spark_cfg.python,
    or this interpreter, so that local mode never picks up a system Python without our deps.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from starscale import console

    python = executor_python(spark_cfg.python) or sys.executable
    # pyspark takes the executors' interpreter from $PYSPARK_PYTHON when the SparkContext starts
    # (also under spark-submit), so a configured spark.python must win over an inherited value.
    if spark_cfg.python:
        os.environ["PYSPARK_PYTHON"] = python
    else:
        os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(
        spark_cfg.app_name + (f"-{app_suffix}" if app_suffix else ""))
    if spark_cfg.master:
        builder = builder.master(spark_cfg.master)
    if spark_cfg.python:
        builder = builder.config("spark.pyspark.python", python)
    # Spark's console progress bars are off (starscale draws its own line, console.live);
    # the config may turn them back on.
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    run_log = console.active()
    conf = dict(spark_cfg.conf)
    if run_log is not None:
        # The driver JVM logs to the run's log file (read when the JVM starts: python -m).
        options = conf.get("spark.driver.extraJavaOptions", "")
        conf["spark.driver.extraJavaOptions"] = f"{options} {run_log.java_options}".strip()
    if not console.verbose():
        # The executors' Python (UDFs, TensorFlow in predict, Horovod's ranks) as quiet as the
        # driver's: the native libraries' log levels (console.NATIVE_QUIET). Config keys win.
        for key, value in console.NATIVE_QUIET.items():
            conf.setdefault(f"spark.executorEnv.{key}", value)
    if str(spark_cfg.master or "").startswith("local") and _package_on_disk():
        # Local mode: every rank is on this host, so Horovod's task services (started inside
        # the executor's Python workers) listen on, and advertise, loopback only, by default;
        # the workers' Python warnings go to the run's log, not the JVM's stderr (the
        # terminal). Both by starscale.worker as the workers' daemon; the driver side is
        # pinned by training.launch. Keys set in the config win.
        conf.setdefault("spark.python.daemon.module", "starscale.worker")
        conf.setdefault(f"spark.executorEnv.{LOOPBACK_BIND_ENV}", "127.0.0.1")
        if run_log is not None and not run_log.verbose:
            conf.setdefault(f"spark.executorEnv.{WORKER_LOG_ENV}", run_log.path)
    # spark-submit started the JVM before our code ran: its log is reconfigured at runtime.
    jvm_was_running = SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if run_log is not None and jvm_was_running:
        console.reconfigure_jvm_log(spark)
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    return spark
