"""Ingest's memory does not grow with its input: 440 MB of long reviews through a 1 GB driver
with 2 shuffle partitions (about the bytes per heap that killed the shipped 4g driver at
9,002,021 Wireless rows). Before the fix (a window over a frame of whole lines persisted in
memory), this run died with java.lang.OutOfMemoryError after ≈30 s."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.helpers import REPO
from starscale.ingest import TSV_HEADER

ROWS = 100_000
UNIQUE_IDS = 99_000           # rows ≥ 99,000 repeat the ids of rows 0..999


def write_wide_tsv(path) -> None:
    """ROWS valid reviews with ≈4.4 kB bodies (800 words drawn from a pool of 2,000)."""
    rng = random.Random(1)
    words = [f"w{i}" for i in range(2000)]
    bodies = [" ".join(rng.choice(words) for _ in range(800)) for _ in range(97)]
    with open(path, "w") as out:
        out.write(TSV_HEADER + "\n")
        for i in range(ROWS):
            fields = ["US", str(i), f"R{i % UNIQUE_IDS:08d}", "P1", "1", "title", "Wireless",
                      str(1 + i % 5), "0", "0", "N", "Y", "head", f"{i} {bodies[i % 97]}",
                      "2015-08-31"]
            out.write("\t".join(fields) + "\n")


@pytest.mark.slow
def test_ingest_of_long_reviews_fits_a_1g_driver_with_2_partitions(tmp_path):
    src = tmp_path / "wide.tsv"
    write_wide_tsv(src)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "starscale", "ingest", "--conf", str(REPO / "conf" / "local.yaml"),
         "--set", f"run.output_dir={out}", "--set", f"ingest.inputs=[{src}]",
         "--set", "spark.conf.spark.driver.memory=1g",
         "--set", 'spark.conf.spark.sql.shuffle.partitions="2"',
         "--set", "spark.log_level=ERROR"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert "OutOfMemoryError" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    totals = json.loads((out / "ingest" / "_MANIFEST.json").read_text())["totals"]
    assert totals["accepted"] == UNIQUE_IDS
    assert totals["rejected"] == {"duplicate_review_id": ROWS - UNIQUE_IDS}
