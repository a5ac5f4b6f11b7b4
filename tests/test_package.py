"""`make package` builds a --py-files zip that spark-submit can run our code and config from."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.helpers import build_package, spark_submit_command, submit_env

PROBE = '''
import json, starscale
from starscale.config import load_config
from starscale.spark import build_session
cfg = load_config()
spark = build_session(cfg.spark, "package-probe")   # spark.master null: spark-submit's
# executors import starscale too: from the same zip, shipped by --py-files
where = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("starscale").__file__).collect()
print("PROBE " + json.dumps({"driver": starscale.__file__, "executor": where[0],
                             "max_len": cfg.encode.max_len}))
spark.stop()
'''


@pytest.mark.jvm
def test_package_zip_runs_under_spark_submit(tmp_path):
    archive = build_package(tmp_path / "dist")
    names = zipfile.ZipFile(archive).namelist()
    assert "starscale/__init__.py" in names and "starscale/conf/base.yaml" in names
    assert "starscale/conf/local.yaml" in names
    # the report's Jinja2 templates (PackageLoader reads them from the zip)
    assert {"starscale/templates/report.html.j2", "starscale/templates/report.md.j2"} <= set(names)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = submit_env(PYSPARK_PYTHON=sys.executable)
    env.pop("STARSCALE_CONF_DIR", None)
    proc = subprocess.run(spark_submit_command("local[1]", archive, probe,
                                               conf={"spark.ui.enabled": "false"}),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    import json
    found = json.loads(line[len("PROBE "):])
    assert "starscale.zip" in found["driver"] and "starscale.zip" in found["executor"]
    assert found["max_len"] == 100
