"""Browser checks (issue 16 points 5–6) in headless Chromium at 1280 px: the HTML report of a
tiny experiment (every image loads, the verdict is visible, no table runs past the window) and
the MLflow UI listing a tiny experiment's runs. They skip where Chromium, chromedriver or the
MLflow UI's venv are missing; .ci/run installs all three."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests import browser
from tests.helpers import REPO

WIDTH = 1280
UI_VENV = REPO / ".venv-ui"

PAGE_FACTS = """
const images = [...document.images].map(i => ({src: i.getAttribute('src'),
                                               loaded: i.complete && i.naturalWidth > 0}));
const verdict = document.getElementById('verdict-sentences');
const box = verdict ? verdict.getBoundingClientRect() : null;
const style = verdict ? getComputedStyle(verdict) : null;
return {images: images,
        verdict_text: verdict ? verdict.innerText : null,
        verdict_visible: !!box && box.width > 0 && box.height > 0 && style.visibility !== 'hidden'
                         && style.display !== 'none' && box.left >= 0 && box.right <= innerWidth,
        tables: [...document.querySelectorAll('table')].map(t => ({
            id: t.id, right: Math.ceil(t.getBoundingClientRect().right)})),
        inner_width: innerWidth, page_width: document.documentElement.scrollWidth};
"""


@pytest.fixture
def chromium():
    why = browser.missing()
    if why:
        pytest.skip(why)
    session = browser.Browser()
    yield session
    session.close()


def report_facts(chromium, index_html) -> dict:
    chromium.get(f"file://{index_html}")
    chromium.wait_for("return document.readyState === 'complete'")
    return chromium.run(PAGE_FACTS)


def test_report_in_a_browser(spark, config_factory, chromium):
    from starscale.stages import report as report_stage
    from tests.test_report import _write_inputs
    cfg = config_factory("report.bootstrap=100", "report.seed=5")
    _write_inputs(cfg)
    summary = report_stage.run(spark, cfg)
    facts = report_facts(chromium, summary["index_html"])
    assert facts["inner_width"] == WIDTH
    assert facts["images"] and all(i["loaded"] for i in facts["images"]), facts["images"]
    assert facts["verdict_visible"] and facts["verdict_text"].strip(), facts
    too_wide = [t for t in facts["tables"] if t["right"] > WIDTH]
    assert facts["tables"] and not too_wide, too_wide
    assert facts["page_width"] <= WIDTH


# ------------------------------------------------------------------------------ MLflow UI
def _tiny_store(tmp_path):
    """An MLflow file store as the experiment writes it (pipeline.tracking.Tracker): an LR and
    an LSTM run (with a 3-epoch history in its model manifest) and the report folder."""
    from starscale.pipeline.tracking import Tracker
    from tests.helpers import make_config
    cfg = make_config(tmp_path, "tracking.enabled=true", "run.name=browser-tiny")
    tracker = Tracker.create(cfg)
    lstm_dir = tmp_path / "out" / "models" / "lstm" / "600_none"
    lstm_dir.mkdir(parents=True)
    (lstm_dir / "_MANIFEST.json").write_text(json.dumps(
        {"stage": "train-lstm", "history": {"loss": [1.5, 1.2, 1.1], "val_loss": [1.6, 1.4, 1.3]}}))
    lr_dir = tmp_path / "out" / "models" / "lr_mllib" / "600_none_top300"
    lr_dir.mkdir(parents=True)
    (lr_dir / "_MANIFEST.json").write_text(json.dumps({"stage": "train-lr"}))
    rows = [{"run_id": "lr_mllib_600_none_tiny", "model": "lr", "engine": "mllib",
             "sample_size": "600", "sample_method": "none", "score": 0.41, "accuracy": 0.5,
             "lr.C": 1.0, "created_utc": "2026-11-30T10:00:00+00:00"},
            {"run_id": "lstm_600_none_tiny", "model": "lstm", "engine": "horovod-spark",
             "sample_size": "600", "sample_method": "none", "score": 0.38, "accuracy": 0.47,
             "lstm.units": 32, "created_utc": "2026-11-30T10:01:00+00:00"}]
    tracker.log_run(rows[0], str(lr_dir))
    tracker.log_run(rows[1], str(lstm_dir))
    report = tmp_path / "out" / "report"
    report.mkdir()
    (report / "index.html").write_text("<html><body>report</body></html>")
    tracker.log_report(str(report), ["The LSTM does not beat the LR."])
    return tracker, [r["run_id"] for r in rows]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_mlflow_ui_lists_the_runs(tmp_path, chromium):
    mlflow = UI_VENV / "bin" / "mlflow"
    if not mlflow.exists():
        pytest.skip("the MLflow UI venv is missing: make mlflow-ui-setup")
    tracker, run_names = _tiny_store(tmp_path)
    port = browser.free_port()
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", tracker.uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)     # its gunicorn workers: one group
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow ui did not start"
                time.sleep(1)
        # per-epoch LSTM metrics are steps; the report is an artifact of every logged run
        lstm_id = tracker.logged["lstm_600_none_tiny"]
        history = _get_json(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={lstm_id}"
                            "&metric_key=epoch.val_loss")["metrics"]
        assert sorted((m["step"], m["value"]) for m in history) == [(0, 1.6), (1, 1.4), (2, 1.3)]
        artifacts = _get_json(f"{base}/api/2.0/mlflow/artifacts/list?run_id={lstm_id}")
        assert "report" in {f["path"] for f in artifacts["files"]}
        chromium.get(f"{base}/#/experiments/{tracker.experiment_id}")
        listed = chromium.wait_for(
            "const t = document.body.innerText; return " +
            " && ".join(f"t.includes({json.dumps(n)})" for n in run_names), timeout_s=90)
        assert listed, chromium.run("return document.body.innerText")[:2000]
    finally:
        os.killpg(server.pid, signal.SIGTERM)               # mlflow ui and its gunicorn
        server.wait(timeout=30)
