"""Shared fixtures: one SparkSession for the whole run, built by spark.build_session from
conf/local.yaml with the test-only settings on top (tests.helpers.TEST_ONLY_SPARK_CONF), and
configs under tmp_path. Shared helpers live in tests/helpers.py."""
from __future__ import annotations

import os
import sys

import pytest

from tests.helpers import REAL_DATA, make_config, spark_test_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from starscale.spark import build_session
    session = build_session(spark_test_config(), "tests")
    yield session
    session.stop()


@pytest.fixture
def config_factory(tmp_path):
    return lambda *overrides, conf=None: make_config(tmp_path, *overrides, conf=conf)


@pytest.fixture
def real_data_path():
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present: {REAL_DATA}")
    return REAL_DATA
