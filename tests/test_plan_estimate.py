"""`experiment --plan` (issue 16 point 3): the grid's steps in order, which are up to date, an
estimate per step, and no Spark job (no JVM) started."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from starscale.pipeline import estimate, plan as plan_
from starscale.stages import ingest as ingest_stage, make_corpus as corpus_stage
from tests.helpers import REPO, make_config

TINY = ["corpus.rows=300", "corpus.partitions=2", "corpus.part_files=1",
        "experiment.sizes=[full]", "experiment.samplers=[none]"]
PLAN_AND_CHECK = """
import sys
from starscale import cli
cli.main(sys.argv[1:])
from pyspark import SparkContext
assert SparkContext._gateway is None and SparkContext._active_spark_context is None, "JVM started"
print("no-jvm-ok")
"""


def _plan_cli(tmp_path, *extra):
    args = ["experiment", "--conf", str(REPO / "conf" / "local.yaml"), "--plan",
            *[a for o in [*TINY, f"run.output_dir={tmp_path / 'out'}"] for a in ("--set", o)],
            *extra]
    done = subprocess.run([sys.executable, "-c", PLAN_AND_CHECK, *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("no-jvm-ok")
    return done.stdout.splitlines()[:-1]


def test_plan_before_anything_ran_lists_every_step_in_order(tmp_path):
    lines = _plan_cli(tmp_path)
    cfg = make_config(tmp_path, *TINY)
    steps = plan_.plan(cfg)
    assert len(lines) == len(steps) + 1
    for i, (line, step) in enumerate(zip(lines, steps), 1):
        assert line.startswith(f"{i:>3}. {f'{step.stage} {step.cell}'.strip()}: run (no output yet")
    # no manifest anywhere yet: the estimate comes from docs/bench's measured rates
    assert re.fullmatch(r"  1\. make-corpus: run \(no output yet; 300 rows; ≈ \d+ s, "
                        r"bench scale [\d,]+\)", lines[0]), lines[0]
    assert lines[-1].startswith(f"[plan] {len(steps)} steps: {len(steps)} to run, 0 up to date")
    assert not (tmp_path / "out").exists()          # nothing written, not even a log


def test_plan_sees_what_is_up_to_date_and_what_a_change_reruns(spark, tmp_path):
    cfg = make_config(tmp_path, *TINY)
    corpus_stage.run(spark, cfg)
    ingest_stage.run(spark, cfg)
    planned = estimate.estimate(cfg)
    status = [(p.stage, p.status, p.reason) for p in planned[:4]]
    assert status == [("make-corpus", "skip", "up to date"), ("ingest", "skip", "up to date"),
                      ("prepare", "run", "no output yet"), ("sample", "run", "no output yet")]
    assert planned[1].basis == "its last run" and planned[1].seconds > 0
    # a changed ingest setting reruns ingest and, through it, everything after it
    changed = estimate.estimate(make_config(tmp_path, *TINY, "ingest.max_rejected_share=0.5"))
    assert [(p.stage, p.reason) for p in changed[:3]] == [
        ("make-corpus", "up to date"), ("ingest", "config changed"),
        ("prepare", "no output yet")]
    forced = estimate.estimate(cfg, force="ingest")
    assert (forced[1].status, forced[1].reason) == ("run", "forced")
    lines = _plan_cli(tmp_path)
    assert lines[1].startswith("  2. ingest: skip (up to date; ")
