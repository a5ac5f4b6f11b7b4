"""Helpers every test module shares: the real configuration with the test-only settings on top,
tiny synthetic inputs, readers of the report's tables, and building and submitting the
--py-files zip. Fixtures live in conftest.py and use these.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LOCAL_CONF = REPO / "conf" / "local.yaml"
REAL_DATA = REPO.parent / "shared" / "data" / "amazon_reviews_us_Digital_Software_v1_00.tsv.gz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Test-only Spark settings, layered over conf/local.yaml's spark section (the real local-mode
# configuration, on base.yaml's): no console progress bars in pytest's output, and only
# errors in the log.
TEST_ONLY_SPARK_CONF = {
    "spark.ui.showConsoleProgress": "false",
}
TEST_ONLY_LOG_LEVEL = "ERROR"


def make_config(tmp_path: Path, *overrides: str, conf: list[str] | None = None):
    """Config from base + local overlay, writing under tmp_path, plus KEY=VALUE overrides."""
    from starscale.config import load_config
    return load_config([str(LOCAL_CONF), *(conf or [])],
                       [f"run.output_dir={tmp_path / 'out'}", *overrides])


def cluster_test_config(run_dir, workers: int, worker_cores: int, worker_memory: str):
    """The cluster section for a test's standalone cluster on free ports under run_dir."""
    from starscale import cluster
    from starscale.config import load_config
    return load_config(None, [f"cluster.run_dir={run_dir}",
                              f"cluster.master_port={cluster.free_port()}",
                              f"cluster.master_webui_port={cluster.free_port(block=3)}",
                              f"cluster.workers={workers}", f"cluster.worker_cores={worker_cores}",
                              f"cluster.worker_memory={worker_memory}",
                              "cluster.start_timeout_s=120"]).cluster


def spark_test_config(*overrides: str):
    """conf/local.yaml's spark section with TEST_ONLY_SPARK_CONF and the log level on top."""
    from starscale.config import load_config
    spark_cfg = load_config([str(LOCAL_CONF)], list(overrides)).spark
    return dataclasses.replace(spark_cfg, conf={**spark_cfg.conf, **TEST_ONLY_SPARK_CONF},
                               log_level=TEST_ONLY_LOG_LEVEL)


# --------------------------------------------------------------------------- tiny LSTM inputs
MAX_LEN = 10


def synthetic_rows(n: int, seed: int, prefix: str) -> dict:
    """n rows: label c (stars 1..5, skewed mix) has signal tokens 2+6c..7+6c at half the
    positions, noise tokens 32..39 elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(5, size=n, p=[0.1, 0.1, 0.2, 0.2, 0.4])
    ids = rng.integers(32, 40, size=(n, MAX_LEN))
    signal_pos = rng.random((n, MAX_LEN)) < 0.5
    signal_tok = 2 + 6 * labels[:, None] + rng.integers(0, 6, size=(n, MAX_LEN))
    ids = np.where(signal_pos, signal_tok, ids).astype(np.int32)
    return {"review_id": [f"{prefix}{seed}-{i}" for i in range(n)], "label": labels.astype(np.int32),
            "weight": np.ones(n), "ids": ids}


# --------------------------------------------------------------------------- report tables
class _Tables(HTMLParser):
    """{table id: [[header cells], [row cells], ...]} of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self.tables[self._id].append(self._row)
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(text: str) -> dict[str, list[dict[str, str]]]:
    parser = _Tables()
    parser.feed(text)
    return {tid: [dict(zip(rows[0], r)) for r in rows[1:]] for tid, rows in parser.tables.items()}


def md_tables(text: str) -> dict[str, list[dict[str, str]]]:
    out = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.fullmatch(r"<!-- table: (\S+) -->", line)
        if not m:
            continue
        header = [c.strip() for c in lines[i + 1].strip("|").split(" | ")]
        rows = []
        for body in lines[i + 3:]:
            if not body.startswith("|"):
                break
            rows.append(dict(zip(header, [c.strip() for c in body[2:-2].split(" | ")])))
        out[m.group(1)] = rows
    return out


# --------------------------------------------------------------------------- package, submit
def build_package(dist: Path) -> Path:
    """`make package` into dist (not the shared dist/): the --py-files zip, as users build it."""
    dist.mkdir(parents=True, exist_ok=True)
    subprocess.run(["make", "-s", "package", f"DIST={dist}", f"PACKAGE_BUILD={dist / 'build'}"],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return dist / "starscale.zip"


def spark_submit_command(master: str, code_zip: Path, script: Path, *script_args: str,
                         conf: dict[str, str] | None = None,
                         driver_memory: str | None = None) -> list[str]:
    """spark-submit of one script with our zip on --py-files (this venv's spark-submit)."""
    args = [str(Path(sys.executable).parent / "spark-submit"), "--master", master]
    if driver_memory:
        args += ["--driver-memory", driver_memory]
    for key, value in (conf or {}).items():
        args += ["--conf", f"{key}={value}"]
    return args + ["--py-files", str(code_zip), str(script), *script_args]


def submit_env(**extra: str) -> dict[str, str]:
    """The environment of a spark-submit: the driver on this venv's Python, quiet TensorFlow."""
    return {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2",
            **extra}


def finish(proc: subprocess.Popen, log, timeout_s: float) -> tuple[int, str]:
    """Wait for a logged subprocess (killed past timeout_s); (its exit code, its whole log)."""
    try:
        proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    return proc.returncode, log.read()


def rank_args(cfg, ckpt_dir, **changes):
    """A training.rank.RankArgs for tests that stop before any data is read: cfg's lstm and
    train sections, vocabulary 50, length 6, one train shard; `changes` replace any field."""
    from starscale.training.rank import RankArgs
    fields = dict(lstm=cfg.lstm, train=cfg.train, seed=1, seq_dir="x", vocab_path="x",
                  vocab_size=50, max_len=6, train_rows={0: 1}, val_rows={},
                  class_weights=[1.0] * 5, ckpt_dir=str(ckpt_dir), fingerprint="f")
    return RankArgs(**{**fields, **changes})
