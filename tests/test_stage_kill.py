"""A real stage SIGKILLed mid-write leaves the published output valid; the rerun equals a clean run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from starscale import storage
from starscale.cli import run_stage
from tests.helpers import REPO


def _sorted_rows(spark, path):
    return sorted(tuple(r) for r in spark.read.parquet(path).collect())


def test_prepare_killed_mid_write_keeps_previous_output(spark, tmp_path, config_factory):
    overrides = ("corpus.rows=3000", "corpus.partitions=2", "corpus.part_files=2")
    cfg = config_factory(*overrides)
    for stage in ("make-corpus", "ingest", "prepare"):
        run_stage(stage, cfg, spark=spark)
    out = cfg.stage_dir("prepare")
    clean_rows = _sorted_rows(spark, out + "/reviews")
    clean_manifest = storage.read_manifest(spark, out)

    staging = out + storage.STAGING_SUFFIX
    cmd = [sys.executable, "-m", "starscale", "prepare", "--conf", str(REPO / "conf" / "local.yaml"),
           "--set", f"run.output_dir={cfg.run.output_dir}", "--force",
           *[a for o in overrides for a in ("--set", o)]]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Kill once Spark has started writing the staging copy (its first table folder exists).
    while time.time() < deadline and proc.poll() is None and not os.path.isdir(staging + "/reviews"):
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(staging), "the killed run left no staging folder: it was not mid-write"

    # The published output is untouched and still readable as an input.
    assert storage.require_manifest(spark, out, "prepare") == clean_manifest
    assert _sorted_rows(spark, out + "/reviews") == clean_rows

    # The rerun replaces the debris and publishes exactly what a clean run published.
    summary = run_stage("prepare", cfg, force=True, spark=spark)
    assert summary["skipped"] is False
    assert not os.path.exists(staging)
    assert _sorted_rows(spark, out + "/reviews") == clean_rows
    rerun_manifest = storage.read_manifest(spark, out)
    for key in ("counts", "ladder", "config_hash", "inputs"):
        if key in clean_manifest:
            assert rerun_manifest[key] == clean_manifest[key], key
