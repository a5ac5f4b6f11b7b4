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
    # spark-submit started the JVM before our code ran: its log is reconfigured at runtime.
    jvm_was_running = SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if run_log is not None and jvm_was_running:
        console.reconfigure_jvm_log(spark)
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    return spark
