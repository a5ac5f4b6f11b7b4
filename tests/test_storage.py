"""Atomic publish, manifests, skip-when-up-to-date and recovery after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from starscale import storage
from tests.helpers import REPO


def _write_table(spark, rows):
    def write(staging):
        spark.createDataFrame(rows, "id long, v string").write.parquet(staging + "/table")
        return {"counts": {"rows": len(rows)}}
    return write


def test_publish_writes_manifest_last_and_swaps(spark, tmp_path):
    out = str(tmp_path / "stage")
    m1 = storage.publish(spark, out, _write_table(spark, [(1, "a")]), {"stage": "t"})
    assert m1["complete"] and m1["counts"] == {"rows": 1}
    assert json.loads((tmp_path / "stage" / "_MANIFEST.json").read_text())["counts"] == {"rows": 1}
    storage.publish(spark, out, _write_table(spark, [(1, "a"), (2, "b")]), {"stage": "t"})
    assert spark.read.parquet(out + "/table").count() == 2
    assert not os.path.exists(out + storage.STAGING_SUFFIX)
    assert not os.path.exists(out + storage.OLD_SUFFIX)


def test_run_stage_skips_when_config_and_inputs_match(spark, tmp_path):
    up = str(tmp_path / "up")
    storage.publish(spark, up, _write_table(spark, [(1, "a")]), {"stage": "up"})
    calls = []

    def write(staging):
        calls.append(staging)
        return _write_table(spark, [(9, "z")])(staging)

    kw = dict(stage="down", output=str(tmp_path / "down"), config={}, upstream={up: "up"}, write=write)
    first = storage.run_stage(spark, config_hash="h1", **kw)
    second = storage.run_stage(spark, config_hash="h1", **kw)
    assert (first["skipped"], second["skipped"], len(calls)) == (False, True, 1)
    assert storage.run_stage(spark, config_hash="h2", **kw)["skipped"] is False      # config changed
    assert storage.run_stage(spark, config_hash="h2", force=True, **kw)["skipped"] is False
    storage.publish(spark, up, _write_table(spark, [(2, "b")]), {"stage": "up"})     # input changed
    assert storage.run_stage(spark, config_hash="h2", **kw)["skipped"] is False
    assert len(calls) == 4


def test_input_without_manifest_is_refused(spark, tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    (half / "part-0.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"has no complete _MANIFEST.json: run the 'ingest' stage"):
        storage.run_stage(spark, stage="prepare", output=str(tmp_path / "o"), config_hash="h",
                          config={}, upstream={str(half): "ingest"}, write=lambda s: {})


def test_output_equal_to_input_is_refused(spark, tmp_path):
    up = str(tmp_path / "same")
    storage.publish(spark, up, _write_table(spark, [(1, "a")]), {"stage": "up"})
    with pytest.raises(ValueError, match="overlaps input path"):
        storage.run_stage(spark, stage="x", output=up, config_hash="h", config={},
                          upstream={up: "up"}, write=lambda s: {})
    with pytest.raises(ValueError, match="overlaps input path"):
        storage.run_stage(spark, stage="x", output=str(tmp_path / "raw"), config_hash="h",
                          config={}, raw_inputs=[str(tmp_path / "raw" / "*.tsv")], write=lambda s: {})


def test_interrupted_swap_is_recovered(spark, tmp_path):
    out = str(tmp_path / "stage")
    storage.publish(spark, out, _write_table(spark, [(1, "a")]), {"stage": "t"})
    os.rename(out, out + storage.OLD_SUFFIX)       # as if killed between the two renames
    manifest = storage.require_manifest(spark, out, "t")
    assert manifest["counts"] == {"rows": 1} and os.path.isdir(out)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])           # the repo: tests.helpers
    from starscale import storage
    from starscale.spark import build_session
    from tests.helpers import spark_test_config
    spark = build_session(spark_test_config("spark.master=local[1]"), "kill-test")
    out, marker = sys.argv[1], sys.argv[2]
    def write(staging):
        spark.createDataFrame([(i, "new") for i in range(100)], "id long, v string") \\
            .write.parquet(staging + "/table")
        open(marker, "w").close()
        time.sleep(600)                       # killed here: mid-stage, after data was written
        return {}
    storage.publish(spark, out, write, {"stage": "t"})
""")


def test_kill_mid_write_leaves_previous_output(spark, tmp_path):
    out = str(tmp_path / "stage")
    storage.publish(spark, out, _write_table(spark, [(1, "old")]), {"stage": "t"})
    marker = tmp_path / "written"
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), out, str(marker), str(REPO)],
                            start_new_session=True)
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), "the writer never reached its write"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(out + storage.STAGING_SUFFIX)     # the half-finished write is there...
    manifest = storage.require_manifest(spark, out, "t")    # ...but the published one is intact
    assert manifest["complete"]
    assert [r.v for r in spark.read.parquet(out + "/table").collect()] == ["old"]
    storage.publish(spark, out, _write_table(spark, [(2, "rerun")]), {"stage": "t"})
    assert [r.v for r in spark.read.parquet(out + "/table").collect()] == ["rerun"]
    assert not os.path.exists(out + storage.STAGING_SUFFIX)
