"""Shared fixtures: one local[2] SparkSession for the whole run (UI off), configs under tmp_path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "amazon_reviews_us_Digital_Software_v1_00.tsv.gz"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "2g",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",          # bind loopback only, never the host's address
    "spark.driver.bindAddress": "127.0.0.1",
}


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession
    builder = SparkSession.builder.master("local[2]").appName("starscale-tests")
    for key, value in TEST_SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def make_config(tmp_path: Path, *overrides: str, conf: list[str] | None = None):
    """Config from base + local overlay, writing under tmp_path, plus KEY=VALUE overrides."""
    from starscale.config import load_config
    return load_config([str(REPO / "conf" / "local.yaml"), *(conf or [])],
                       [f"run.output_dir={tmp_path / 'out'}", *overrides])


@pytest.fixture
def config_factory(tmp_path):
    return lambda *overrides, conf=None: make_config(tmp_path, *overrides, conf=conf)


@pytest.fixture
def real_data_path():
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present: {REAL_DATA}")
    return REAL_DATA
