"""Config loading: base + overlays + --set, and each kind of error naming its key."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from starscale.config import load_config
from tests.helpers import REPO


def _load(tmp_path, overlay: str | None = None, *overrides: str):
    files = []
    if overlay is not None:
        path = tmp_path / "overlay.yaml"
        path.write_text(overlay)
        files.append(str(path))
    return load_config(files, list(overrides))


def test_base_loads_with_its_documented_defaults():
    cfg = load_config()
    assert cfg.corpus.star_mix == [0.140, 0.067, 0.090, 0.167, 0.536]
    assert cfg.encode.max_len == 100 and cfg.encode.tfidf_features == 4000
    assert (cfg.lstm.embedding_dim, cfg.lstm.units, cfg.lstm.spatial_dropout) == (300, 64, 0.2)
    assert cfg.split.train == 0.8 and cfg.ladder.sizes[-1] == "full"
    assert cfg.spark.master is None


def test_overlays_apply_in_order_and_set_wins(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("corpus:\n  rows: 10\n  gzip: true\n")
    second = tmp_path / "b.yaml"
    second.write_text("corpus:\n  rows: 20\n")
    cfg = load_config([str(first), str(second)], ["corpus.rows=30", "spark.conf.spark.foo=bar"])
    assert cfg.corpus.rows == 30 and cfg.corpus.gzip is True
    assert cfg.spark.conf["spark.foo"] == "bar"
    # an overlay adds spark.conf keys and keeps the base ones
    local = load_config([str(REPO / "conf" / "local.yaml")])
    assert local.spark.master == "local[2]"
    assert local.spark.conf["spark.sql.session.timeZone"] == "UTC"


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.corpus.rows = 5  # type: ignore[misc]


def test_sampling_strategy_accepts_a_dict(tmp_path):
    cfg = _load(tmp_path, "sample:\n  strategy: {1: 100, 5: 200}\n")
    assert cfg.sample.strategy == {1: 100, 5: 200}


@pytest.mark.parametrize("overlay, overrides, message", [
    ("corpus:\n  rowz: 5\n", (), "unknown key 'corpus.rowz'"),
    ("corpus:\n  dirt:\n    htmll: 0.1\n", (), "unknown key 'corpus.dirt.htmll'"),
    (None, ("lstm.unitz=3",), "unknown key 'lstm.unitz'"),
    ("corpus:\n  rows: many\n", (), "corpus.rows: expected an integer"),
    ("corpus:\n  gzip: 1\n", (), "corpus.gzip: expected true/false"),
    (None, ("encode.max_len=2.5",), "encode.max_len: expected an integer"),
    ("ladder:\n  sizes: [100, lots]\n", (), "ladder.sizes[1]"),
    ("corpus:\n  rows: 0\n", (), "corpus.rows: 0 is out of range"),
    ("corpus:\n  dirt:\n    url: 1.5\n", (), "corpus.dirt.url: 1.5 is out of range"),
    (None, ("lstm.spatial_dropout=1",), "lstm.spatial_dropout: 1.0 is out of range"),
    (None, ("sample.method=smote",), "sample.method: 'smote' is not one of"),
    (None, ("sample.strategy=most",), "sample.strategy: 'most' is not one of"),
    (None, ("sample.strategy={7: 3}",), "sample.strategy.7"),
    (None, ("split.train=0.5",), "split: train + validation + test must be 1"),
    ("corpus:\n  star_mix: [0.5, 0.5]\n", (), "corpus.star_mix: need 5"),
    (None, ("corpus.rows",), "expected KEY=VALUE"),
])
def test_errors_name_the_key(tmp_path, overlay, overrides, message):
    with pytest.raises(ValueError) as err:
        _load(tmp_path, overlay, *overrides)
    assert message in str(err.value)


def test_missing_key_in_base_is_an_error(tmp_path):
    base = tmp_path / "base.yaml"
    text = (REPO / "conf" / "base.yaml").read_text().replace("  max_len: 100\n", "")
    base.write_text(text)
    with pytest.raises(ValueError, match="missing key 'encode.max_len'"):
        load_config(base=base)


def test_missing_overlay_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="config file not found: .*nope.yaml"):
        load_config([str(tmp_path / "nope.yaml")])


def test_cli_rejects_a_bad_key_before_spark_starts():
    proc = subprocess.run([sys.executable, "-m", "starscale", "ingest", "--set", "ingest.inputz=[]"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key 'ingest.inputz'" in proc.stderr
    assert "SparkContext" not in proc.stderr


def test_help_lists_stages():
    proc = subprocess.run([sys.executable, "-m", "starscale", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for stage in ("make-corpus", "ingest", "prepare", "sample", "encode", "train-lr", "train-lstm"):
        assert stage in proc.stdout
    job = subprocess.run([sys.executable, str(REPO / "jobs" / "ingest.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert job.returncode == 0 and "--conf" in job.stdout and "--set" in job.stdout
