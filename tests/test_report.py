"""The report stage on a hand-made results table: tables parse back to the rows, plots are PNGs,
the verdict sentence matches hand-computed numbers, reruns skip until the results change."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from starscale import report, results, verdict
from starscale.stages import report as report_stage
from tests.helpers import PNG_MAGIC, REPO
from tests.helpers import html_tables as _html_tables
from tests.helpers import md_tables as _md_tables

PER_CLASS = 20          # test rows per star → 100 test rows

# (model, size, sampler, k): k of the 20 rows of each star predicted right, the rest one star up;
# then every recall and precision is k/20, so score = accuracy = macro F1 = k/20 (see _preds).
RUNS = [
    ("lr", 50000, "none", 8), ("lr", 50000, "random_under", 9),
    ("lr", 100000, "none", 10), ("lr", 100000, "random_under", 11),
    ("lstm", 50000, "none", 6), ("lstm", 50000, "random_under", 7),
    ("lstm", 100000, "none", 14), ("lstm", 100000, "random_under", 12),
]
LR_SERIES = "LR (mllib, 4,000 TF-IDF features)"


def _preds(k: int):
    labels = np.repeat(np.arange(5), PER_CLASS)
    within = np.tile(np.arange(PER_CLASS), 5)
    pred = np.where(within < k, labels, (labels + 1) % 5)
    return [f"t{i:03d}" for i in range(labels.size)], labels, pred


def _proba(pred):
    """Class probabilities whose argmax is pred (0.6 on it, 0.1 elsewhere)."""
    proba = np.full((len(pred), 5), 0.1)
    proba[np.arange(len(pred)), pred] = 0.6
    return proba


def _write_inputs(cfg) -> list[dict]:
    results_dir = cfg.stage_dir("results")
    written = []
    for i, (model, size, method, k) in enumerate(RUNS):
        share = k / PER_CLASS
        row = {"run_id": f"{model}_{size}_{method}", "model": model,
               "engine": "mllib" if model == "lr" else "horovod-local",
               "tag": f"{size}_{method}", "sample_size": str(size), "sample_method": method,
               "stage": f"train-{model}", "created_utc": f"2026-01-01T00:00:{i:02d}+00:00",
               "score": share, "val_score": share, "score_lo": share - 0.05, "score_hi": share + 0.05,
               "accuracy": share, "accuracy_lo": share - 0.04, "accuracy_hi": share + 0.04,
               "macro_f1": share, "macro_f1_lo": share - 0.03, "macro_f1_hi": share + 0.03,
               "n_test": 5 * PER_CLASS, "fit_seconds": 10.0 + i, "samples_per_s": 1000.0 * (i + 1),
               **{f"{key}_{star}": share for key in ("precision", "recall", "f1")
                  for star in range(1, 6)},
               **{f"support_{star}": PER_CLASS for star in range(1, 6)}}
        if model == "lr":
            row["encode"] = {"tfidf_features": 4000, "tfidf_hashed": False}
            row["lr"] = {"C": 1.0, "engine": "mllib"}
        else:
            row["lstm"] = {"units": 64}
        written.append(results.append_result(results_dir, row))
        ids, labels, pred = _preds(k)
        results.save_predictions(results_dir, row["run_id"], ids, labels, pred, _proba(pred))
        results.save_predictions(results_dir, row["run_id"], ids, labels, pred, _proba(pred),
                                 split="validation")
    for size in (50000, 100000):
        for method in ("none", "random_under"):
            before = {"1": size // 10, "2": size // 20, "3": size // 10, "4": size // 5,
                      "5": size // 2 + size // 20}
            after = before if method == "none" else {s: size // 20 for s in before}
            _manifest(cfg, f"sample/{size}_{method}", {
                "stage": "sample", "size": size, "method": method, "seconds": 1.5,
                "rows_before": sum(before.values()), "rows_after": sum(after.values()),
                "class_counts_before": before, "class_counts_after": after,
                "versions": {"pyspark": "3.5.7"}})
    _manifest(cfg, "ingest", {
        "stage": "ingest", "format": "tsv", "seconds": 12.25, "versions": {"pyspark": "3.5.7"},
        "files": [{"path": "/data/a.tsv", "lines": 1003, "header_lines": 1, "accepted": 990,
                   "rejected": {"bad_star": 4, "field_count": 8}, "rejected_total": 12,
                   "rejected_share": 0.011976}],
        "totals": {"lines": 1003, "header_lines": 1, "accepted": 990, "rejected_total": 12,
                   "rejected": {"bad_star": 4, "field_count": 8}, "rejected_share": 0.011976},
        "counts": {"reviews": 990, "quarantine": 12}})
    return written


def _manifest(cfg, rel: str, data: dict) -> None:
    folder = os.path.join(cfg.run.output_dir, rel)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "_MANIFEST.json"), "w") as fh:
        json.dump(data, fh)


def _check_results_table(parsed: list[dict[str, str]], written: list[dict]) -> None:
    assert len(parsed) == len(written)
    by_id = {r["run_id"]: r for r in parsed}
    assert set(by_id) == {w["run_id"] for w in written}
    for w in written:
        got = by_id[w["run_id"]]
        for col in ("model", "engine", "tag", "sample_size", "sample_method"):
            assert got[col] == str(w[col]), (w["run_id"], col)
        for col in ("score", "score_lo", "score_hi", "accuracy", "accuracy_lo", "accuracy_hi",
                    "macro_f1", "macro_f1_lo", "macro_f1_hi"):
            assert float(got[col]) == pytest.approx(w[col], abs=5e-5), (w["run_id"], col)
        assert int(got["train_rows"]) == int(w["sample_size"])
        assert got["n_test"] == "100"


def test_report_from_hand_made_results(spark, config_factory):
    cfg = config_factory("report.bootstrap=300", "report.seed=5")
    written = _write_inputs(cfg)
    table = results.read_results(cfg.stage_dir("results"))
    assert len(table) == len(RUNS)
    summary = report_stage.run(spark, cfg)
    out = summary["output"]
    html_text = open(summary["index_html"]).read()
    md_text = open(summary["report_md"]).read()

    # the results table, both renderings, equals what was appended
    html_tables, md_tables = _html_tables(html_text), _md_tables(md_text)
    _check_results_table(html_tables["results"], written)
    _check_results_table(md_tables["results"], written)
    assert html_tables.keys() == md_tables.keys()
    for tid in html_tables:
        assert html_tables[tid] == md_tables[tid], tid

    # sampler comparison at 100000 (both sizes have 2 samplers; the larger wins the tie)
    sampling = {(r["series"], r["sample_method"]): float(r["score"])
                for r in html_tables["sampling"]}
    assert sampling == {(LR_SERIES, "none"): 0.5, (LR_SERIES, "random_under"): 0.55,
                        ("LSTM", "none"): 0.7, ("LSTM", "random_under"): 0.6}

    # verdict at 100,000 rows: the LSTM and LR cells with the best validation scores (LSTM none,
    # 14/20 = 0.70; LR under, 11/20 = 0.55) = +0.150 on every metric; the LSTM is right on a
    # superset of the LR's rows, so the interval is above the margin 0.01 (conf/base.yaml)
    primary, sentence = summary["verdict"]
    assert re.fullmatch(r"at 100,000 rows the LSTM beats the LR \(mllib, 4,000 TF-IDF features\) "
                        r"by more than the margin 0\.01: \+0\.150 \[0\.\d{3}, 0\.\d{3}\]",
                        sentence), sentence
    lo, hi = map(float, re.findall(r"\[(.*), (.*)\]", sentence)[0])
    assert 0.01 < lo <= 0.15 <= hi
    # one LR setting: the primary result is that comparison, on the raw score
    assert primary == ("Primary result (raw score, mean over seeds; the LSTM against every LR "
                       "setting selected on validation: mllib, 4,000 TF-IDF features): at "
                       "100,000 rows the LSTM beats the LR by more than the margin 0.01: "
                       f"LSTM − best LR +0.150 [{lo:.3f}, {hi:.3f}]")
    assert primary in html_text and primary in md_text
    assert sentence in html_text and sentence in md_text
    rows = {r["metric"]: r for r in html_tables["verdict"] if r["basis"] == "raw"}
    assert set(rows) == {"score", "accuracy", "macro_f1"}
    for metric, r in rows.items():
        assert (r["lstm_cell"], r["lr_cell"], r["rows"]) == ("100000_none",
                                                             "100000_random_under", "100000")
        assert float(r["diff"]) == pytest.approx(0.15, abs=5e-5)
        assert r["outcome"] == "lstm_better"
        assert r["role"] == ("primary" if metric == "score" else "descriptive")
    assert {r["basis"] for r in html_tables["verdict"]} == {"raw", "offsets"}
    assert {r["role"] for r in html_tables["verdict"] if r["basis"] == "offsets"} == \
        {"descriptive"}
    # what the design resolves, the seeds used, both models' budgets, the LSTM's epochs
    (resolution,) = html_tables["resolution"]
    assert float(resolution["half_width"]) == pytest.approx(0.15 - lo, abs=1e-3)
    assert {r["model"]: r["seeds_used"] for r in html_tables["seed_plan"]} == \
        {"LSTM": "1", LR_SERIES: "1"}
    assert {r["series"] for r in html_tables["budgets"]} == {"LSTM", LR_SERIES}
    assert html_tables["lstm_training"]
    selected = {(r["series"], r["train_rows"]): r["sample_method"]
                for r in html_tables["selection"] if r["selected"] == "yes"}
    assert selected[("LSTM", "100000")] == "none" and selected[(LR_SERIES, "100000")] == \
        "random_under"
    assert "Pre-registered comparison" in html_text and "never used to choose" in md_text

    # plateaus: LR none 0.40 → 0.50 (+0.10 per doubling) is still rising
    plateaus = {(r["series"], r["sample_method"]): r for r in html_tables["plateau"]}
    assert plateaus[(LR_SERIES, "none")]["status"] == "rising"
    assert plateaus[(LR_SERIES, "none")]["plateau_rows"] == ""

    # per-class tables of the best runs, class counts and ingest facts from the manifests
    assert [float(r["recall"]) for r in html_tables["per_class_lstm"]] == [0.7] * 5
    counts = {(r["tag"], r["star"]): (r["before"], r["after"]) for r in html_tables["class_counts"]}
    assert counts[("50000_random_under", "5")] == ("27500", "2500")
    assert {r["reason"]: r["rows"] for r in html_tables["ingest_quarantine"]} == \
        {"bad_star": "4", "field_count": "8"}
    ingest_facts = {r["key"]: r["value"] for r in html_tables["ingest"]}
    assert ingest_facts["totals.accepted"] == "990" and ingest_facts["counts.quarantine"] == "12"
    assert {r["folder"] for r in html_tables["stage_timings"]} >= {"ingest", "sample/50000_none"}

    # every plot exists, is referenced and is a PNG; no external resource
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert set(pngs) >= {"learning_curves.png", "sampling.png", "confusion_lr.png",
                         "confusion_lstm.png", "per_class_lr.png", "per_class_lstm.png",
                         "class_distribution.png"}
    for name in pngs:
        data = open(os.path.join(out, name), "rb").read()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
        assert f'src="{name}"' in html_text and f"]({name})" in md_text
    assert not re.search(r"(src|href)=\"(https?:)?//", html_text)
    assert os.path.isfile(os.path.join(out, "_MANIFEST.json"))

    # a rerun skips; a new results row rebuilds
    assert report_stage.run(spark, cfg)["skipped"] is True
    results.append_result(cfg.stage_dir("results"), {**written[0], "run_id": "lr_again",
                                                     "created_utc": "2026-01-02T00:00:00+00:00"})
    results.save_predictions(cfg.stage_dir("results"), "lr_again", *_preds(8))
    results.save_predictions(cfg.stage_dir("results"), "lr_again", *_preds(8), split="validation")
    again = report_stage.run(spark, cfg)
    assert again["skipped"] is False and again["runs"] == len(RUNS) + 1


def test_report_refuses_without_results(spark, config_factory):
    with pytest.raises(ValueError, match="no results table"):
        report_stage.run(spark, config_factory())


def test_report_refuses_predictions_on_different_test_rows(spark, config_factory):
    cfg = config_factory("report.bootstrap=50")
    results_dir = cfg.stage_dir("results")
    for model, k in (("lr", 10), ("lstm", 12)):
        share = k / PER_CLASS
        results.append_result(results_dir, {"run_id": f"{model}_x", "model": model,
                                            "tag": "50000_none", "sample_size": "50000",
                                            "sample_method": "none", "score": share,
                                            "val_score": share})
        ids, labels, pred = _preds(k)
        if model == "lstm":
            ids = [i.replace("t", "u") for i in ids]
        results.save_predictions(results_dir, f"{model}_x", ids, labels, pred)
    with pytest.raises(ValueError, match="not on the same test rows"):
        report_stage.run(spark, cfg)


def test_report_config_section(config_factory):
    cfg = config_factory()
    assert (cfg.report.plateau_min_gain, cfg.report.alpha, cfg.report.sampling_size) == \
        (0.005, 0.05, None)
    assert config_factory("report.sampling_size=full").report.sampling_size == "full"
    with pytest.raises(ValueError, match="report.sampling_size"):
        config_factory("report.sampling_size=0")


def test_templates_escape_html_and_keep_markdown_parseable():
    page = report._Page()
    page.section("A <b> & c", "it's <i>")
    page.add_table(report.Table("t1", ["name", "x|y"], [["a<b>&c", 0.5], ["p|q\nr", None]]),
                   "Cap & co", collapsed=True)
    page.add_list("verdict-sentences", [("first <x>", True), ("second", False)])
    page.add_code("config", "yaml", "k: '<v>'\n")
    files = page.render("T & <U>")
    html_text, md_text = files["index.html"].decode(), files["report.md"].decode()
    assert "<title>T &amp; &lt;U&gt;</title>" in html_text
    assert "<h1>T &amp; &lt;U&gt;</h1>" in html_text
    assert "<h2>A &lt;b&gt; &amp; c</h2>" in html_text and "<i>" not in html_text
    assert "<details><summary>2 rows × 2 columns</summary>" in html_text
    assert ('<ul id="verdict-sentences"><li><strong>first &lt;x&gt;</strong></li>'
            "<li>second</li></ul>") in html_text
    assert "<pre id=\"config\">k: &#39;&lt;v&gt;&#39;\n</pre>" in html_text
    assert _html_tables(html_text)["t1"] == [{"name": "a<b>&c", "x|y": "0.5000"},
                                             {"name": "p|q\nr", "x|y": ""}]
    assert md_text.startswith("# T & <U>\n\n## A <b> & c\n\nit's <i>\n\n### Cap & co\n\n")
    assert "<!-- table: t1 -->\n| name | x\\|y |\n|---|---|\n| a<b>&c | 0.5000 |\n" \
           "| p\\|q r |  |\n" in md_text
    assert "- **first <x>**\n- second\n" in md_text
    assert md_text.endswith("```yaml\nk: '<v>'\n```\n")


def test_templates_load_from_the_py_files_zip(tmp_path):
    """spark-submit --py-files ships starscale as a zip (make package zips lib/starscale): the
    templates are read from inside it."""
    archive = tmp_path / "starscale.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((REPO / "lib" / "starscale").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(REPO / "lib"))
    assert "starscale/templates/report.html.j2" in zipfile.ZipFile(archive).namelist()
    probe = ("import starscale.report as r\n"
             "page = r._Page(); page.add_table(r.Table('t', ['c'], [[2]]))\n"
             "files = page.render('zipped')\n"
             "print(r.__file__)\n"
             "print(files['index.html'].decode()); print(files['report.md'].decode())\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(archive)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"{archive}/starscale/report.py")
    assert "<h1>zipped</h1>" in proc.stdout and '<table id="t">' in proc.stdout
    assert "<!-- table: t -->\n| c |\n|---|\n| 2 |" in proc.stdout


def test_one_point_per_cell_keeps_the_setting_chosen_on_validation():
    # the LSTM's tuning grid trains two settings of the 20k none cell: the curves and the
    # plateau get the one with the higher validation score (0.44), not the higher test score
    curves = pd.DataFrame([
        {"run_id": "a", "series": "LSTM", "sample_method": "none", "train_rows": 20000.0,
         "val_score": 0.42, "score": 0.50},
        {"run_id": "b", "series": "LSTM", "sample_method": "none", "train_rows": 20000.0,
         "val_score": 0.44, "score": 0.43},
        {"run_id": "c", "series": "LSTM", "sample_method": "none", "train_rows": 80000.0,
         "val_score": 0.47, "score": 0.47},
        {"run_id": "d", "series": "LSTM", "sample_method": "random_under",
         "train_rows": 20000.0, "val_score": 0.40, "score": 0.41}])
    assert list(report.one_per_point(curves)["run_id"]) == ["b", "c", "d"]
    # the plateau of the kept points: 0.43 -> 0.47 over two doublings = +0.02 per doubling, rising
    (found, _) = verdict.curve_plateaus(report.one_per_point(curves), 0.005)
    assert found["status"] == "rising"
