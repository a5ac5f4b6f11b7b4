"""The only SparkSession builder."""
from __future__ import annotations

import os
import sys

from starscale.config import SparkConfig


def build_session(spark_cfg: SparkConfig, app_suffix: str = ""):
    """Return a SparkSession for spark_cfg.

    master null: the session takes whatever spark-submit set (cluster mode); a value such as
    local[2] or spark://host:7077 is used as given. The executors' Python is spark_cfg.python,
    or this interpreter, so that local mode never picks up a system Python without our deps.
    """
    from pyspark.sql import SparkSession

    python = spark_cfg.python or sys.executable
    # PYSPARK_PYTHON must be set before the JVM starts for local mode; spark.pyspark.python
    # covers spark-submit, where the JVM is already running.
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(
        spark_cfg.app_name + (f"-{app_suffix}" if app_suffix else ""))
    if spark_cfg.master:
        builder = builder.master(spark_cfg.master)
    if spark_cfg.python:
        builder = builder.config("spark.pyspark.python", spark_cfg.python)
    for key, value in spark_cfg.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    return spark
