"""The experiment job on a tiny synthetic corpus: report = results, stage reuse when the grid
grows, resume after SIGKILL, --force STAGE, MLflow logging, and the pure grid helpers."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starscale import results, storage
from starscale.config import LRFeaturesConfig
from starscale.pipeline import plan as experiment
from starscale.pipeline import tracking
from starscale.cli import force_value
from starscale.stages import experiment as experiment_stage
from tests.helpers import PNG_MAGIC, REPO, make_config
from tests.helpers import html_tables as _html_tables
from tests.helpers import md_tables as _md_tables

# ~3,500 reviews: train ≈ 2,800 rows, so the ladder sizes below are real subsets.
TINY = [
    "corpus.rows=3500", "corpus.partitions=2", "corpus.part_files=1",
    "ladder.sizes=[600, 1200, 2400]",
    "experiment.sizes=[600, 1200]", "experiment.samplers=[none, random_under]",
    "experiment.models=[lr, lstm]", "experiment.lr_engines=[mllib]",
    "experiment.lr_features=[{features: 300, hashed: false}]",
    "encode.vocab_size=2000", "encode.max_len=30", "encode.shards=1",
    "lr.max_iter=30", "evaluate.bootstrap=50", "report.bootstrap=100",
    "lstm.embedding_dim=8", "lstm.units=8", "lstm.epochs=1", "lstm.batch_size=64",
    "lstm.shuffle_buffer=256", "lstm.early_stopping_patience=0",
    "train.launcher=local", "train.workers=1", "train.warmup_epochs=0",
    "spark.conf.spark.sql.shuffle.partitions=4",
    # one seed, one LR setting and no step minimum here; test_full_cell_... covers them
    "experiment.seeds=1", "lr.reg_grid=[]", "lstm.min_steps=0",
]
CELLS = {"600_none", "600_random_under", "1200_none", "1200_random_under"}


def _steps(summary: dict) -> dict[tuple[str, str], str]:
    return {(s["stage"], s["cell"]): s["status"] for s in summary["steps"]}


def _manifest(cfg) -> dict:
    return storage.read_manifest_local(cfg.stage_dir("experiment"))


def _cell_of(step_cell: str) -> str:
    """'lr_mllib/600_none_top300' / 'lstm/600_none' / '600_none_top300' → '600_none'."""
    m = re.search(r"(\d+|full)_(none|random_under|random_over|class_weight|adasyn)", step_cell)
    return m.group(0) if m else ""


# Spark settings that are secrets (not in any stage's hash): the grown runs carry them, and
# test_a_fake_secret_never_reaches_any_output_file looks for them in every file written.
FAKE_SECRET = "FAKE-s3cr3t-9f1c2e"
SECRETS = [f"spark.conf.spark.hadoop.fs.s3a.secret.key={FAKE_SECRET}",
           f"spark.conf.spark.hadoop.fs.s3a.session.token={FAKE_SECRET}"]


@pytest.fixture(scope="module")
def grown(spark, tmp_path_factory):
    """One output folder: the 2 × 2 grid, then the same grid with a third size (MLflow on,
    fake secrets in the Spark settings)."""
    root = tmp_path_factory.mktemp("experiment")
    cfg = make_config(root, *TINY, *SECRETS, "tracking.enabled=true")
    first = experiment_stage.run(spark, cfg)
    first["manifest"] = _manifest(cfg)        # before the second run replaces it
    bigger = make_config(root, *TINY, *SECRETS, "tracking.enabled=true",
                         "experiment.sizes=[600, 1200, 2400]")
    second = experiment_stage.run(spark, bigger)
    return cfg, first, bigger, second


def test_a_fake_secret_never_reaches_any_output_file(grown):
    """Whole (tiny) experiments with MLflow on: no file under the output folder holds it."""
    cfg, *_ = grown
    assert cfg.spark.conf["spark.hadoop.fs.s3a.secret.key"] == FAKE_SECRET   # Spark gets it
    files = [p for p in Path(cfg.run.output_dir).rglob("*") if p.is_file()]
    assert any(p.name == "index.html" for p in files) and any("mlruns" in str(p) for p in files)
    assert any(p.name == "config.json" for p in files)            # the LSTM bundle's config
    leaked = [str(p) for p in files if FAKE_SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_experiment_report_equals_results(grown):
    cfg, first, _, _ = grown
    steps = _steps(first)
    assert all(status == "ran" for status in steps.values()), steps
    assert {_cell_of(c) for (stage, c) in steps if stage == "sample"} == CELLS
    assert sum(stage == "train-lr" for stage, _ in steps) == 4
    assert sum(stage == "train-lstm" for stage, _ in steps) == 4

    # the experiment's manifest is what run() returned
    manifest = first["manifest"]
    assert _steps(manifest) == steps and manifest["counts"]["ran"] == len(steps)

    # the report's results table is the results table of this run (the first one)
    out = os.path.join(cfg.run.output_dir, "report")
    first_runs = {r["run_id"] for r in first["runs"]}
    assert len(first_runs) == 8
    table = results.read_results(cfg.stage_dir("results"))
    # rows written by the first run: those the first summary lists (the second adds size 2400)
    first_rows = table[table["run_id"].isin(first_runs)]
    assert len(first_rows) == 8
    # The report was rebuilt by the second run: its tables hold all 12 rows; check every
    # row of the table against the parquet, column by column.
    html_text = open(os.path.join(out, "index.html")).read()
    md_text = open(os.path.join(out, "report.md")).read()
    html_tables, md_tables = _html_tables(html_text), _md_tables(md_text)
    for tables in (html_tables, md_tables):
        parsed = {r["run_id"]: r for r in tables["results"]}
        assert set(parsed) == set(table["run_id"])
        for row in table.to_dict("records"):
            got = parsed[row["run_id"]]
            for col in ("model", "sample_method"):
                assert got[col] == str(row[col])
            assert got["sample_size"] == str(row["sample_size"])
            for col in ("score", "accuracy", "macro_f1"):
                assert float(got[col]) == pytest.approx(row[col], abs=5e-5), (row["run_id"], col)
    # every plot is a non-empty PNG
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert {"learning_curves.png", "sampling.png"} <= set(pngs)
    for name in pngs:
        data = open(os.path.join(out, name), "rb").read()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name

    # the verdict sentence matches the numbers of the verdict table
    verdict_rows = {r["metric"]: r for r in html_tables["verdict"] if r["basis"] == "raw"}
    primary, sentence = _sentences(_manifest(cfg)["verdict"])      # the second run's report
    # one LR setting: the primary result is its comparison
    assert primary.startswith("Primary result (raw score, mean over seeds; the LSTM against "
                              "every LR setting selected on validation: mllib, 300 TF-IDF")
    lo, hi = _check_sentence(sentence, verdict_rows["score"], 2400)
    assert f"[{lo:.3f}, {hi:.3f}]" in primary
    # the verdict's pair: the LSTM and LR cells with the best validation score at that size
    score = verdict_rows["score"]
    at = table[table["sample_size"].astype(str) == "2400"]
    # (ties: the first sampler in name order, as verdict.select)
    best = {m: at[at["model"] == m].sort_values(["val_score", "sample_method"],
                                                ascending=[False, True]).iloc[0]
            for m in ("lstm", "lr")}
    assert score["lstm_cell"] == best["lstm"]["tag"]
    assert score["lr_cell"] + "_top300" == best["lr"]["tag"]
    assert float(score["diff"]) == pytest.approx(best["lstm"]["score"] - best["lr"]["score"],
                                                 abs=5e-4)
    assert sentence in html_text and sentence in md_text


def _sentences(lines: list[str]) -> tuple[str, str]:
    """(the primary result, the one per-LR sentence) of a manifest's verdict lines; warning
    lines (an LR that did not converge in this tiny grid) are left out."""
    (primary,) = [x for x in lines if x.startswith("Primary result")]
    (sentence,) = [x for x in lines if x.startswith("at ")]
    return primary, sentence


def _check_sentence(sentence: str, score_row: dict, rows: int) -> tuple[float, float]:
    """The sentence's size, difference, interval and wording agree with the verdict table
    (the six outcomes against the margin 0.01 of conf/base.yaml)."""
    m = re.fullmatch(r"at ([\d,]+) rows (.*): "
                     r"([+-]\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\]", sentence)
    assert m, sentence
    assert int(m.group(1).replace(",", "")) == int(score_row["rows"]) == rows
    # the sentence rounds the difference to 3 decimals (±5e-4), the table to 4 (±5e-5)
    assert float(m.group(3)) == pytest.approx(float(score_row["diff"]), abs=5.5e-4)
    lo, hi = float(m.group(4)), float(m.group(5))
    assert lo <= float(m.group(3)) <= hi
    margin = 0.01
    expected = ("lstm_better" if lo > margin else "lr_better" if hi < -margin
                else "equivalent" if -margin < lo and hi < margin
                else "not_worse" if lo > -margin else "does_not_beat" if hi < margin
                else "inconclusive")
    words = {"lstm_better": "the LSTM beats", "lr_better": "beats the LSTM by more",
             "equivalent": "are equivalent within", "not_worse": "is not worse than",
             "does_not_beat": "does not beat", "inconclusive": "inconclusive"}
    assert words[expected] in m.group(2) and score_row["outcome"] == expected
    return lo, hi


def test_adding_a_size_runs_only_that_size(grown):
    _, _, bigger, second = grown
    steps = _steps(second)
    for (stage, cell), status in steps.items():
        if stage == "report":
            assert status == "ran"
        elif _cell_of(cell).startswith("2400_"):
            assert status == "ran", (stage, cell)
        else:
            assert status == "skipped", (stage, cell)
    assert sum(_cell_of(c).startswith("2400_") for _, c in steps) == 2 * 4   # sample, encode, lr, lstm
    # results: one row per trained model, none appended twice by a skipped stage
    table = results.read_results(bigger.stage_dir("results"))
    assert len(table) == 12 and table["run_id"].is_unique
    assert _manifest(bigger)["counts"]["skipped"] == len(steps) - 8 - 1


def test_mlflow_logged_each_trained_run_once(grown):
    from mlflow.tracking import MlflowClient
    _, _, bigger, second = grown
    uri = "file:" + os.path.join(bigger.run.output_dir, "mlruns")
    assert second["tracking"]["mlflow_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(bigger.run.name)
    runs = client.search_runs([exp.experiment_id])
    table = results.read_results(bigger.stage_dir("results"))
    by_id = {r.data.tags["starscale.run_id"]: r for r in runs}
    assert len(runs) == 12 and set(by_id) == set(table["run_id"])
    row = table.iloc[0]
    logged = by_id[row["run_id"]]
    assert logged.data.metrics["score"] == pytest.approx(row["score"])
    assert logged.data.params["sample_method"] == row["sample_method"]
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert "model" in names
    # the runs trained by the second experiment also carry the report
    new_ids = second["tracking"]["logged"].values()
    assert len(new_ids) == 4          # 2 samplers × (LR, LSTM) at size 2400
    for mlflow_id in new_ids:
        assert any(a.path == "report/index.html"
                   for a in client.list_artifacts(mlflow_id, "report"))


def test_rerun_of_the_same_grid_skips_everything(spark, grown):
    _, _, bigger, _ = grown
    again = experiment_stage.run(spark, bigger)
    assert set(_steps(again).values()) == {"skipped"}
    assert again["counts"] == {"ran": 0, "skipped": len(again["steps"])}
    assert len(results.read_results(bigger.stage_dir("results"))) == 12


def test_force_sample_recomputes_sample_and_dependents(spark, grown):
    cfg, *_ = grown
    one = make_config(Path(cfg.run.output_dir).parent, *TINY, "experiment.sizes=[600]",
                      "experiment.samplers=[none]")
    before = len(results.read_results(one.stage_dir("results")))
    summary = experiment_stage.run(spark, one, force=force_value("experiment", "sample"))
    steps = _steps(summary)
    assert steps == {("make-corpus", ""): "skipped", ("ingest", ""): "skipped",
                     ("prepare", ""): "skipped", ("sample", "600_none"): "ran",
                     ("encode", "600_none_top300"): "ran",
                     ("train-lr", "lr_mllib/600_none_top300"): "ran",
                     ("train-lstm", "lstm/600_none"): "ran", ("report", ""): "ran"}
    assert len(results.read_results(one.stage_dir("results"))) == before + 2


def test_killed_experiment_resumes(spark, tmp_path):
    overrides = [*TINY, "experiment.sizes=[600]", "tracking.enabled=false",
                 f"run.output_dir={tmp_path / 'out'}"]
    cmd = [sys.executable, "-m", "starscale", "experiment", "--conf", str(REPO / "conf" / "local.yaml"),
           *[a for o in overrides for a in ("--set", o)], "--set",
           "spark.conf.spark.ui.showConsoleProgress='false'"]
    models = tmp_path / "out" / "models"
    log = open(tmp_path / "experiment.log", "w")
    # Own process group: the kill takes the job and its Spark JVM together (test_stage_kill.py).
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        # the first train-lr has appended its results row and then published its model (the
        # row is written first: a published model always has its row)
        # (a staging or lease sibling, <output>._*, holds a manifest before its swap: not yet)
        while not [p for p in models.glob("lr_*/*/_MANIFEST.json") if "._" not in str(p)]:
            assert proc.poll() is None, (tmp_path / "experiment.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out = tmp_path / "out"
    done = {str(p.parent) for p in out.rglob("_MANIFEST.json") if "._" not in str(p)}
    assert done, "nothing was published before the kill"
    cfg = make_config(tmp_path, *overrides)
    summary = experiment_stage.run(spark, cfg)
    by_output = {s["output"]: s for s in summary["steps"]}
    finished = [o for o in by_output if o in done]
    assert any(by_output[o]["stage"] == "train-lr" for o in finished)
    for output in finished:
        assert by_output[output]["status"] == "skipped", by_output[output]
    for output, step in by_output.items():
        if output not in done:
            assert step["status"] == "ran", step
    table = results.read_results(cfg.stage_dir("results"))
    assert len(table) == 4 and table["run_id"].is_unique      # 2 samplers × (LR, LSTM)


# --------------------------------------------------------------------------- pure helpers
def test_plan_and_derived_configs(config_factory):
    cfg = config_factory("ladder.sizes=[100, 200, full]", "experiment.sizes=[full, 100]",
                         "experiment.samplers=[none]", "experiment.lr_engines=[mllib, sklearn]")
    steps = experiment.plan(cfg)
    assert [(s.stage, s.cell) for s in steps] == [
        ("make-corpus", ""), ("ingest", ""), ("prepare", ""),
        ("sample", "100_none"),
        ("encode", "100_none_top4000"),
        ("train-lr", "lr_mllib/100_none_top4000"), ("train-lr", "lr_sklearn/100_none_top4000"),
        ("encode", "100_none_hash1048576"),
        ("train-lr", "lr_mllib/100_none_hash1048576"), ("train-lr", "lr_sklearn/100_none_hash1048576"),
        ("train-lstm", "lstm/100_none"),
        ("sample", "full_none"),
        ("encode", "full_none_top4000"),
        ("train-lr", "lr_mllib/full_none_top4000"), ("train-lr", "lr_sklearn/full_none_top4000"),
        ("encode", "full_none_hash1048576"),
        ("train-lr", "lr_mllib/full_none_hash1048576"), ("train-lr", "lr_sklearn/full_none_hash1048576"),
        ("train-lstm", "lstm/full_none"),
        ("report", "")]
    lstm = steps[10].cfg
    assert (lstm.sample.size, lstm.encode.tfidf_features, lstm.encode.tfidf_hashed) == (100, 4000, False)
    assert cfg.sample.size == "full" and cfg.encode.tfidf_features == 4000   # base untouched
    assert steps[8].cfg.lr.engine == "mllib" and steps[9].cfg.lr.engine == "sklearn"
    with_inputs = config_factory("ingest.inputs=[x.tsv]", "experiment.sizes=[full]")
    assert [s.stage for s in experiment.plan(with_inputs)][:2] == ["ingest", "prepare"]
    with pytest.raises(ValueError, match="experiment.sizes"):
        experiment.plan(config_factory("experiment.sizes=[123]"))


def test_seed_replicates_and_lstm_widths_in_the_plan(config_factory):
    cfg = config_factory("ladder.sizes=[100, full]", "experiment.sizes=[100, full]",
                         "experiment.samplers=[none, random_under]", "experiment.seeds=3",
                         "experiment.lstm_units=[64, 128]",
                         "experiment.lr_features=[{features: 4000, hashed: false}]")
    lstm_steps = [s.cell for s in experiment.plan(cfg) if s.stage == "train-lstm"]
    assert lstm_steps == ["lstm/100_none", "lstm/100_none_u128", "lstm/100_random_under",
                          "lstm/100_random_under_u128", "lstm/full_none", "lstm/full_none_u128",
                          "lstm/full_random_under", "lstm/full_random_under_u128"]
    # results rows of the grid at full: chosen on val_score (the test score says the opposite)
    runs = [
        {"model": "lstm", "sample_size": "full", "sample_method": "none", "val_score": 0.40,
         "score": 0.9, "lstm.units": 64},
        {"model": "lstm", "sample_size": "full", "sample_method": "random_under",
         "val_score": 0.45, "score": 0.1, "lstm.units": 128},
        {"model": "lr", "sample_size": "full", "sample_method": "none", "val_score": 0.50,
         "score": 0.1, "engine": "mllib", "encode.tfidf_features": 4000,
         "encode.tfidf_hashed": False},
        {"model": "lr", "sample_size": "full", "sample_method": "random_under", "val_score": 0.49,
         "score": 0.9, "engine": "mllib", "encode.tfidf_features": 4000,
         "encode.tfidf_hashed": False},
        {"model": "lstm", "sample_size": "100", "sample_method": "none", "val_score": 0.99},
    ]
    chosen = experiment.selected_cells(runs, "full")
    assert [(c.model, c.sampler, c.units) for c in chosen] == [("lr", "none", None),
                                                               ("lstm", "random_under", 128)]
    extra = experiment.replicate_steps(cfg, chosen)
    # the LR without sampling is deterministic: not replicated; the LSTM twice more
    assert [(s.stage, s.cell) for s in extra] == [
        ("sample", "full_random_under_r1"), ("encode", "full_random_under_r1_top4000"),
        ("train-lstm", "lstm/full_random_under_r1_u128"),
        ("sample", "full_random_under_r2"), ("encode", "full_random_under_r2_top4000"),
        ("train-lstm", "lstm/full_random_under_r2_u128")]
    r2 = extra[-1].cfg
    assert (r2.sample.seed, r2.encode.seed, r2.run.seed) == (cfg.sample.seed + 2,
                                                             cfg.encode.seed + 2, cfg.run.seed + 2)
    assert (r2.lstm.units, r2.sample.replicate) == (128, 2)
    # an under-sampled LR is replicated, sharing the sample step with the LSTM
    under = experiment.selected_cells([{**runs[3], "val_score": 0.6}, runs[1]], "full")
    cells = [s.cell for s in experiment.replicate_steps(cfg, under) if s.stage != "sample"]
    assert "lr_mllib/full_random_under_r1_top4000" in cells
    assert len([s for s in experiment.replicate_steps(cfg, under) if s.stage == "sample"]) == 2


def test_lstm_tuning_grid_runs_at_the_tuning_size_and_carries_its_choice(config_factory):
    cfg = config_factory("ladder.sizes=[100, full]", "experiment.sizes=[100, full]",
                         "experiment.samplers=[none]", "experiment.lstm_units=[64, 128]",
                         "experiment.lstm_learning_rates=[0.0005, 0.001]",
                         "experiment.tuning_size=100",
                         "experiment.lr_features=[{features: 4000, hashed: false}]")
    steps = [s for s in experiment.plan(cfg) if s.stage == "train-lstm"]
    # the first rate and width keep the plain tag; at full one step waits for the choice
    assert [(s.cell, s.deferred) for s in steps] == [
        ("lstm/100_none", False), ("lstm/100_none_u128", False),
        ("lstm/100_none_lr0.001", False), ("lstm/100_none_u128_lr0.001", False),
        ("lstm/full_none (tuned setting)", True)]
    assert [(s.cfg.lstm.learning_rate, s.cfg.lstm.units) for s in steps[:4]] == [
        (0.0005, 64), (0.0005, 128), (0.001, 64), (0.001, 128)]
    # chosen on validation at 100 (the test score says otherwise), then carried to full
    runs = [{"model": "lstm", "sample_size": "100", "sample_method": "none",
             "lstm.learning_rate": rate, "lstm.units": units, "val_score": val, "score": test}
            for rate, units, val, test in ((0.0005, 64, 0.40, 0.9), (0.0005, 128, 0.41, 0.1),
                                           (0.001, 64, 0.43, 0.1), (0.001, 128, 0.42, 0.1))]
    assert experiment.tuned_lstm(runs, 100) == (0.001, 64)
    full = experiment.resolve_lstm(steps[-1], cfg, (0.001, 64))
    assert (full.cell, full.deferred, full.cfg.lstm.learning_rate, full.cfg.lstm.units) == \
        ("lstm/full_none_lr0.001", False, 0.001, 64)
    # the tuning size runs first when it is not the smallest
    later = config_factory("ladder.sizes=[100, full]", "experiment.sizes=[100, full]",
                           "experiment.samplers=[none]", "experiment.tuning_size=full")
    assert [s.cell for s in experiment.plan(later) if s.stage == "sample"] == ["full_none",
                                                                               "100_none"]
    with pytest.raises(ValueError, match="experiment.tuning_size"):
        experiment.plan(config_factory("experiment.sizes=[full]", "experiment.tuning_size=100"))


def test_seed_rule_tops_up_from_validation_scores(config_factory):
    cfg = config_factory("experiment.seeds=auto", "experiment.seed_half_width=0.03",
                         "experiment.max_seeds=10")
    assert experiment.initial_seeds(cfg) == 5
    assert experiment.initial_seeds(config_factory("experiment.max_seeds=3")) == 3
    assert experiment.initial_seeds(config_factory("experiment.seeds=2")) == 2
    lstm = experiment.Selected("lstm", "full", "random_under", units=64, learning_rate=0.001)
    lr_all_rows = experiment.Selected("lr", "full", "none", LRFeaturesConfig(4000, False),
                                      "mllib", reg_param=1e-5)
    # five seeds with validation scores 0.40 .. 0.48: sd 0.0316228; t(0.975, 4) = 2.776445:
    # (2.776445 * 0.0316228 / 0.03)^2 = 8.57 -> 9 seeds. Test scores are not read.
    runs = [{"model": "lstm", "sample_size": "full", "sample_method": "random_under",
             "lstm.units": 64, "lstm.learning_rate": 0.001, "val_score": 0.40 + 0.02 * k,
             "score": 0.0, "replicate": k} for k in range(5)]
    runs.append({**runs[0], "lstm.units": 128, "val_score": 0.9})     # another setting
    (entry,) = experiment.seed_top_up(cfg, [lstm, lr_all_rows], runs)
    assert (entry["runs"], entry["seeds"]) == (5, 9)
    assert entry["val_sd"] == pytest.approx(0.0316228, abs=1e-6)
    more = experiment.replicate_steps(cfg, [lstm], 5, 9)
    assert [s.cell for s in more if s.stage == "train-lstm"] == [
        f"lstm/full_random_under_r{k}" for k in (5, 6, 7, 8)]
    # a fixed number of seeds: no top-up
    assert experiment.seed_top_up(config_factory("experiment.seeds=3"), [lstm], runs) == []
    # an LR replicate repeats the regParam chosen on validation
    under = experiment.Selected("lr", "full", "random_under", LRFeaturesConfig(4000, False),
                                "mllib", reg_param=1e-5)
    (lr_step,) = [s for s in experiment.replicate_steps(cfg, [under], 1, 2)
                  if s.stage == "train-lr"]
    assert lr_step.cfg.lr.reg_grid == [1e-5]


def test_config_and_force_values(config_factory):
    cfg = config_factory()
    assert cfg.experiment.sizes is None and cfg.experiment.models == ["lr", "lstm"]
    assert [(f.features, f.hashed) for f in cfg.experiment.lr_features] == [(4000, False),
                                                                            (1048576, True)]
    assert (cfg.tracking.enabled, cfg.tracking.mlflow_uri) == (True, None)
    for bad in ("experiment.models=[]", "experiment.samplers=[none, none]",
                "experiment.models=[cnn]", "experiment.lr_features=[{features: 0, hashed: true}]"):
        with pytest.raises(ValueError, match="experiment"):
            config_factory(bad)
    assert experiment.forced_stages(False) == set()
    assert experiment.forced_stages(True) == set(experiment.STAGE_ORDER)
    assert experiment.forced_stages("sample") == {"sample"}
    assert force_value("sample", True) is True and force_value("sample", "sample") is True
    assert force_value("experiment", "encode") == "encode"
    with pytest.raises(ValueError, match="--force"):
        force_value("sample", "encode")
    with pytest.raises(ValueError, match="--force"):
        force_value("experiment", "nonsense")


def test_progress_line_and_summary_table():
    assert experiment.progress_line("sample", "50000_random_under", 35012, 12.34, "ran") == \
        "[experiment] sample 50000_random_under: 35,012 rows, 12.3 s (ran)"
    assert experiment.progress_line("report", "", None, 0.04, "skipped") == \
        "[experiment] report: - rows, 0.0 s (skipped)"
    text = experiment.summary_table([
        {"series": "lstm", "sample_size": 600, "sample_method": "none", "score": 0.25,
         "accuracy": 0.5, "macro_f1": float("nan")}])
    assert text.splitlines() == [
        "model  size  sampler  score   accuracy  macro_f1",
        "-----  ----  -------  ------  --------  --------",
        "lstm   600   none     0.2500  0.5000    -"]
    row = {"model": "lr", "engine": "mllib", "encode.tfidf_features": 1048576,
           "encode.tfidf_hashed": True, "score": 0.5, "recall_1": 0.2, "fit_seconds": 3,
           "run_id": "x", "lr.C": 1.0, "stopped_early": True}
    assert experiment.run_label(row) == "lr_mllib hash1048576"
    assert tracking.mlflow_metrics(row) == {"score": 0.5, "recall_1": 0.2, "fit_seconds": 3.0}
    assert tracking.mlflow_params(row) == {"model": "lr", "engine": "mllib", "lr.C": "1.0",
                                             "encode.tfidf_features": "1048576",
                                             "encode.tfidf_hashed": "True"}


def test_full_cell_with_seeds_chosen_on_validation(spark, tmp_path):
    """The full-size cell, two seeds and an LR grid: the selection reads validation scores only,
    the LR at full under random under-sampling sits at the full train split's size, and the
    verdict uses both seeds of the selected cells."""
    cfg = make_config(tmp_path, *TINY, "experiment.sizes=[600, full]", "ladder.sizes=[600, full]",
                      "experiment.seeds=2", "lr.reg_grid=[1.0e-4, 1.0e-2]",
                      "tracking.enabled=false")
    summary = experiment_stage.run(spark, cfg)
    steps = _steps(summary)
    table = results.read_results(cfg.stage_dir("results"))
    full = table[(table["sample_size"].astype(str) == "full") & (table["replicate"] == 0)]
    # highest validation score; ties: the first sampler in name order (a 1-epoch LSTM may score
    # 0 on both)
    chosen = {m: full[full["model"] == m].sort_values(["val_score", "sample_method"],
                                                      ascending=[False, True]).iloc[0]
              for m in ("lr", "lstm")}
    # the LSTM's selected cell got a second seed; the LR's only if its sampler is random
    lstm_cell = chosen["lstm"]["sample_tag"]
    assert steps[("train-lstm", f"lstm/{lstm_cell}_r1")] == "ran"
    lr_cell = chosen["lr"]["sample_tag"]
    lr_replicated = ("train-lr", f"lr_mllib/{lr_cell}_r1_top300") in steps
    assert lr_replicated == (chosen["lr"]["sample_method"] == "random_under")
    replicas = table[table["replicate"] == 1]
    assert set(replicas["model"]) == ({"lstm", "lr"} if lr_replicated else {"lstm"})
    # every LR row of the grid carries its grid, a replicate only the regParam chosen there;
    # the validation predictions of each exist
    chosen_reg = float(chosen["lr"]["lr.reg_param_effective"])
    for row in table[table["model"] == "lr"].to_dict("records"):
        expected = [1.0e-4, 1.0e-2] if row["replicate"] == 0 else [chosen_reg]
        assert [p["reg_param"] for p in json.loads(row["lr_grid"])] == expected
        assert len(results.read_predictions(cfg.stage_dir("results"), row["run_id"],
                                            "validation")) > 0
    # the report: the LR at full under random_under is drawn at the rows before sampling
    out = os.path.join(cfg.run.output_dir, "report")
    tables = _html_tables(open(os.path.join(out, "index.html")).read())
    full_rows = storage.read_manifest_local(os.path.join(cfg.stage_dir("sample"),
                                                         "full_random_under"))["rows_before"]
    lr_under = [r for r in tables["results"] if r["model"] == "lr"
                and r["sample_size"] == "full" and r["sample_method"] == "random_under"]
    assert lr_under and all(int(r["train_rows"]) == full_rows for r in lr_under)
    score = {r["metric"]: r for r in tables["verdict"] if r["basis"] == "raw"}["score"]
    assert (score["lstm_cell"], score["lr_cell"]) == (lstm_cell, lr_cell)
    assert score["lstm_seeds"] == "2" and score["lr_seeds"] == ("2" if lr_replicated else "1")
    _, sentence = _sentences(_manifest(cfg)["verdict"])
    _check_sentence(sentence, score, full_rows)
