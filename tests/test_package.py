"""`make package` builds a --py-files zip that spark-submit can run our code and config from."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

PROBE = '''
import json, starscale
from starscale.config import load_config
from pyspark.sql import SparkSession
cfg = load_config()
spark = SparkSession.builder.getOrCreate()
# executors import starscale too: from the same zip, shipped by --py-files
where = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("starscale").__file__).collect()
print("PROBE " + json.dumps({"driver": starscale.__file__, "executor": where[0],
                             "max_len": cfg.encode.max_len}))
spark.stop()
'''


def test_package_zip_runs_under_spark_submit(tmp_path):
    subprocess.run(["make", "-s", "package"], cwd=REPO, check=True, capture_output=True, timeout=600)
    archive = REPO / "dist" / "starscale.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert "starscale/__init__.py" in names and "starscale/conf/base.yaml" in names
    assert "starscale/conf/local.yaml" in names
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "STARSCALE_CONF_DIR": "", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("STARSCALE_CONF_DIR")
    submit = Path(sys.executable).parent / "spark-submit"
    proc = subprocess.run([str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
                           "--py-files", str(archive), str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    import json
    found = json.loads(line[len("PROBE "):])
    assert "starscale.zip" in found["driver"] and "starscale.zip" in found["executor"]
    assert found["max_len"] == 100
