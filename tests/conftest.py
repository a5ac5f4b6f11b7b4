"""Shared fixtures: one SparkSession per test process, built by spark.build_session from
conf/local.yaml with the test-only settings on top (tests.helpers.TEST_ONLY_SPARK_CONF), and
configs under tmp_path. Shared helpers live in tests/helpers.py.

The tiers (pytest.ini): a test that uses the spark fixture, or is marked slow, is `jvm`; one
marked `jvm` or `integration` by its file is not `fast`; every other test is `fast`, and
`make test-fast` runs those with no JVM reachable (JAVA_HOME points nowhere), so a fast test
that starts one fails instead of slowing the tier down."""
from __future__ import annotations

import os
import sys

import pytest

from tests.helpers import REAL_DATA, make_config, spark_test_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

# Every JVM the tests start compiles with C1 only: they live seconds to minutes on tiny data,
# where C2's compiler threads cost more CPU than they ever win back. On 2 cores the suite is
# CPU-bound, and this cuts a Spark test's CPU by about 40% (docs/testing.md); results are the
# same (Java's arithmetic does not depend on the JIT tier). Drivers (the spark fixture, every
# spark-submit and `make full-data-train`) take SPARK_SUBMIT_OPTS; their executors take
# spark.executor.extraJavaOptions from the driver's system properties (SparkConf loads spark.*
# ones); standalone masters and workers take SPARK_DAEMON_JAVA_OPTS (starscale.cluster passes
# its environment on, starscale.hosts passes this variable into each host).
TEST_JIT = "-XX:TieredStopAtLevel=1"
for _var, _opts in (("SPARK_SUBMIT_OPTS", f"{TEST_JIT} -Dspark.executor.extraJavaOptions={TEST_JIT}"),
                    ("SPARK_DAEMON_JAVA_OPTS", TEST_JIT)):
    if TEST_JIT not in os.environ.get(_var, ""):
        os.environ[_var] = f"{os.environ.get(_var, '')} {_opts}".strip()


# The heaviest files first (bench/test_durations.py, docs/testing.md): `make test` hands whole
# files to 2 workers in collection order (pytest_xdist_make_scheduler below), so the long ones
# start at once and the short ones fill in around them.
HEAVY_FIRST = ("test_cluster.py", "test_hosts.py", "test_experiment.py", "test_bench_quick.py",
               "test_reliability.py", "test_resample.py", "test_hvd_train.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))     # stable: file order kept
    for item in items:
        if "spark" in item.fixturenames or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.jvm)
        if not any(item.get_closest_marker(m) for m in ("jvm", "integration")):
            item.add_marker(pytest.mark.fast)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` in collection order: xdist would hand out the files with the most tests
    first, which starts the longest ones (the separate hosts: 8 tests) last."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class InCollectionOrder(LoadFileScheduling):
        def _assign_work_unit(self, node):
            if not getattr(self, "_in_order", False):
                first = {}
                for index, nodeid in enumerate(self.collection):
                    first.setdefault(self._split_scope(nodeid), index)
                ordered = sorted(self.workqueue.items(), key=lambda kv: first[kv[0]])
                self.workqueue.clear()
                self.workqueue.update(ordered)
                self._in_order = True
            super()._assign_work_unit(node)

    return InCollectionOrder(config, log)


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
