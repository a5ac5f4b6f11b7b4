"""Metrics against the study's reference value and scikit-learn; results table round trips."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats import hmean
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

from starscale import metrics, results

STUDY_CONFUSION = [[1134, 374, 139, 38, 50],
                   [247, 280, 187, 66, 26],
                   [115, 278, 414, 264, 96],
                   [69, 140, 392, 897, 605],
                   [157, 171, 362, 1311, 4634]]


def _noisy_predictions(n: int, keep: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=[0.14, 0.07, 0.09, 0.17, 0.53])
    pred = np.where(rng.random(n) < keep, y, rng.integers(0, 5, n))
    return y, pred


def test_score_reproduces_study_value():
    assert round(metrics.score(STUDY_CONFUSION), 6) == 0.465569


def test_score_matches_hmean_of_sklearn_recalls_and_precision():
    y, pred = _noisy_predictions(3000, 0.5, seed=1)
    precision, recall, _, _ = precision_recall_fscore_support(y, pred, labels=range(5),
                                                              zero_division=0)
    expected = hmean(list(recall[:4]) + [precision[4]])
    assert metrics.score(confusion_matrix(y, pred, labels=range(5))) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("row, col", [(1, 1), (0, 0), (3, 3), (4, 4)])
def test_score_is_zero_when_a_component_is_zero(row, col):
    conf = np.array(STUDY_CONFUSION)
    conf[row, col] = 0                      # recall(row+1 star) = 0, or precision(5 star) = 0
    assert metrics.score(conf) == 0.0


def test_score_is_zero_when_nothing_is_predicted_five():
    conf = np.array(STUDY_CONFUSION)
    conf[:, 3] += conf[:, 4]
    conf[:, 4] = 0                          # precision(5 star) undefined → 0
    assert metrics.score(conf) == 0.0


def test_confusion_matches_sklearn():
    y, pred = _noisy_predictions(500, 0.4, seed=2)
    np.testing.assert_array_equal(metrics.confusion(y, pred),
                                  confusion_matrix(y, pred, labels=range(5)))


def test_confusion_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..4"):
        metrics.confusion([0, 5], [0, 1])


def test_summary_matches_sklearn():
    y, pred = _noisy_predictions(2000, 0.55, seed=3)
    got = metrics.summary(y, pred)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=range(5), average="macro", zero_division=0), abs=1e-12)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=range(5), zero_division=0)
    for k, cls in enumerate(got["per_class"]):
        assert cls["star"] == k + 1
        assert cls["precision"] == pytest.approx(precision[k], abs=1e-12)
        assert cls["recall"] == pytest.approx(recall[k], abs=1e-12)
        assert cls["f1"] == pytest.approx(f1[k], abs=1e-12)
        assert cls["support"] == support[k]
    assert got["confusion"] == confusion_matrix(y, pred, labels=range(5)).tolist()


def test_summary_macro_f1_counts_a_class_never_seen_as_zero():
    y = [0, 0, 1, 1, 4]
    pred = [0, 1, 1, 1, 4]                   # stars 3 and 4 absent from both
    assert metrics.summary(y, pred)["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=range(5), average="macro", zero_division=0))


def test_bootstrap_intervals_contain_point_and_are_reproducible():
    y, pred = _noisy_predictions(3000, 0.6, seed=4)
    point = metrics.summary(y, pred)
    ci = metrics.bootstrap_ci(y, pred, n=500, seed=7)
    for name in ("score", "accuracy", "macro_f1"):
        lo, hi = ci[name]
        assert lo < point[name] < hi
    assert metrics.bootstrap_ci(y, pred, n=500, seed=7) == ci


def test_bootstrap_matches_row_resampling():
    """The multinomial draw of confusion cells equals resampling rows (same distribution)."""
    y, pred = _noisy_predictions(1500, 0.6, seed=5)
    rng = np.random.default_rng(11)
    naive = {"accuracy": [], "macro_f1": []}
    for _ in range(2000):
        idx = rng.integers(0, len(y), len(y))
        naive["accuracy"].append(accuracy_score(y[idx], pred[idx]))
        naive["macro_f1"].append(f1_score(y[idx], pred[idx], labels=range(5), average="macro",
                                          zero_division=0))
    ci = metrics.bootstrap_ci(y, pred, n=2000, seed=12)
    for name, draws in naive.items():
        lo, hi = np.quantile(draws, [0.025, 0.975])
        assert ci[name][0] == pytest.approx(lo, abs=0.006)
        assert ci[name][1] == pytest.approx(hi, abs=0.006)


def test_paired_diff_of_a_model_with_itself_is_zero():
    y, pred = _noisy_predictions(1000, 0.5, seed=6)
    diff = metrics.paired_bootstrap_diff(y, pred, pred, n=300, seed=1)
    for name in ("score", "accuracy", "macro_f1"):
        assert diff[name]["diff"] == 0.0
        assert diff[name]["lo"] == 0.0 and diff[name]["hi"] == 0.0


# --------------------------------------------------------------------------- the mean over seeds
def test_interval_with_pure_seed_noise_is_welchs_t_interval():
    # no test noise: the interval is the two-sample Welch t interval of the replicate scores,
    # computed here by scipy (an independent implementation)
    a = [0.50, 0.53, 0.47, 0.52, 0.49]
    b = [0.45, 0.46, 0.44]
    got = metrics.mean_diff_interval(a, b, test_var=0.0, alpha=0.05)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got["diff"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert (got["lo"], got["hi"]) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_interval_with_one_seed_each_is_the_normal_interval_of_the_paired_test_bootstrap():
    # one seed per model: only the test rows vary. For accuracy the variance of a paired
    # difference is known: (p10 + p01 - (p10 - p01)^2) / N, p10 the share of rows A gets right
    # and B wrong
    rng = np.random.default_rng(21)
    y, a = _noisy_predictions(3000, 0.6, seed=22)
    b = np.where(rng.random(len(y)) < 0.7, a, rng.integers(0, 5, len(y)))
    right_a, right_b = a == y, b == y
    p10, p01 = np.mean(right_a & ~right_b), np.mean(~right_a & right_b)
    analytic = (p10 + p01 - (p10 - p01) ** 2) / len(y)
    got = metrics.seeded_bootstrap_diff(y, [a], [b], n=20_000, seed=3)["accuracy"]
    assert got["test_var"] == pytest.approx(analytic, rel=0.04)
    assert got["seed_var_a"] == got["seed_var_b"] == 0.0 and got["df"] == float("inf")
    half = 1.959964 * np.sqrt(analytic)
    assert got["diff"] == pytest.approx(p10 - p01, abs=1e-12)
    assert (got["lo"], got["hi"]) == pytest.approx((p10 - p01 - half, p10 - p01 + half),
                                                   abs=0.02 * half)


def _seeded_runs(rng, y, difficulty, accuracy: float, seed_sd: float,
                 runs: int) -> list[np.ndarray]:
    """Replicates of a model whose accuracy varies by seed (normal, sd seed_sd) around
    `accuracy`. Every replicate (and the other model) finds the same rows hard (difficulty,
    uniform per row), except on a random tenth of the rows per replicate: seeds of a real model
    mostly agree row by row. A wrong row gets another class at random."""
    out = []
    for _ in range(runs):
        p = accuracy + rng.normal(0.0, seed_sd)
        own = np.where(rng.random(len(y)) < 0.1, rng.random(len(y)), difficulty)
        wrong = (y + rng.integers(1, 5, len(y))) % 5
        out.append(np.where(own < p, y, wrong))
    return out


def test_interval_for_the_mean_covers_the_true_difference_with_seed_and_test_noise():
    # 200 simulated experiments with known expected accuracies 0.60 (A, seed sd 0.03, 4 seeds)
    # and 0.55 (B, seed sd 0.01, 3 seeds) on 600 fresh test rows each: a 95% interval for the
    # difference of the means must cover +0.05 about 95% of the time. The bootstrap of the
    # test rows alone (the seeds' spread left out) covers far less.
    rng = np.random.default_rng(30)
    covered = test_only = 0
    trials = 200
    for t in range(trials):
        y = rng.integers(0, 5, 600)
        difficulty = rng.random(600)
        a = _seeded_runs(rng, y, difficulty, 0.60, 0.03, 4)
        b = _seeded_runs(rng, y, difficulty, 0.55, 0.01, 3)
        got = metrics.seeded_bootstrap_diff(y, a, b, n=400, seed=t)["accuracy"]
        covered += got["lo"] <= 0.05 <= got["hi"]
        half = 1.959964 * np.sqrt(got["test_var"])
        test_only += got["diff"] - half <= 0.05 <= got["diff"] + half
    assert 0.90 <= covered / trials <= 0.99      # 0.961 over 1,000 trials (seed 99)
    assert test_only / trials < 0.85


def test_seed_top_up_rule_and_detectable_difference_known_values():
    # t(0.975, 4 df) = 2.7764 (a t table): (2.7764 * 0.017 / 0.01)^2 = 22.3 -> 23 seeds
    assert metrics.seeds_for_half_width(0.017, runs=5, half_width=0.01, cap=50) == 23
    assert metrics.seeds_for_half_width(0.017, runs=5, half_width=0.01, cap=10) == 10
    assert metrics.seeds_for_half_width(0.0, runs=5, half_width=0.01, cap=10) == 5
    # (z(0.975) + z(0.8)) * se = (1.959964 + 0.841621) * 0.01
    assert metrics.detectable_difference(0.01, float("inf")) == pytest.approx(0.0280159, abs=1e-6)
    with pytest.raises(ValueError, match="runs"):
        metrics.seeds_for_half_width(0.01, runs=1, half_width=0.01, cap=10)


def test_paired_diff_detects_a_better_model():
    rng = np.random.default_rng(8)
    y, worse = _noisy_predictions(4000, 0.4, seed=7)
    better = np.where(rng.random(len(y)) < 0.5, y, worse)   # fixes about half the errors
    diff = metrics.paired_bootstrap_diff(y, better, worse, n=500, seed=2)
    expected = accuracy_score(y, better) - accuracy_score(y, worse)
    assert diff["accuracy"]["diff"] == pytest.approx(expected, abs=1e-12)
    assert 0 < diff["accuracy"]["lo"] < expected < diff["accuracy"]["hi"]
    assert diff["accuracy"]["share_a_better"] == 1.0


def test_metric_columns_are_flat():
    y, pred = _noisy_predictions(300, 0.6, seed=9)
    row = metrics.metric_columns(metrics.summary(y, pred), {"score": (0.1, 0.2)})
    assert row["score_lo"] == 0.1 and row["score_hi"] == 0.2 and row["accuracy_lo"] is None
    assert {"recall_1", "precision_5", "f1_3", "support_2", "n_test", "confusion"} <= set(row)


# --------------------------------------------------------------------------- results table
def test_results_round_trip_with_differing_columns(tmp_path):
    out = str(tmp_path / "results")
    results.append_result(out, {"run_id": "a", "model": "lr", "sample_size": "50000",
                                "lr": {"C": 1.0, "engine": "mllib"}, "score": 0.41, "epochs": None})
    results.append_result(out, {"run_id": "b", "model": "lstm", "sample_size": "full",
                                "lstm": {"units": 64}, "score": 0.47, "epochs": 5,
                                "strategy": {1: 100}})
    # a type that differs from the first rows' (int after text) is kept as text, not lost
    results.append_result(out, {"run_id": "c", "model": "lr", "lr": {"engine": 3}, "score": 0.5})
    table = results.read_results(out).set_index("run_id")
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "lr.C"] == 1.0 and pd.isna(table.loc["b", "lr.C"])
    assert table.loc["b", "lstm.units"] == 64 and pd.isna(table.loc["a", "lstm.units"])
    assert table.loc["b", "epochs"] == 5 and pd.isna(table.loc["a", "epochs"])
    assert table.loc["b", "strategy"] == '{"1": 100}'
    assert list(table["lr.engine"]) == ["mllib", None, "3"]
    assert list(table["score"]) == [0.41, 0.47, 0.5]
    csv = pd.read_csv(tmp_path / "results" / "results.csv")
    assert list(csv["run_id"]) == ["a", "b", "c"]
    assert "created_utc" in table.columns


def test_results_concurrent_appends_all_land(tmp_path):
    out = str(tmp_path / "results")

    def worker(k: int) -> None:
        for i in range(5):
            results.append_result(out, {"run_id": f"w{k}_{i}", "model": "lr", f"only_{k}": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = results.read_results(out)
    assert sorted(table["run_id"]) == sorted(f"w{k}_{i}" for k in range(3) for i in range(5))
    assert {"only_0", "only_1", "only_2"} <= set(table.columns)


def test_read_results_empty(tmp_path):
    assert results.read_results(str(tmp_path / "nothing")).empty


def test_predictions_round_trip(tmp_path):
    out = str(tmp_path / "results")
    proba = np.array([[0.7, 0.1, 0.1, 0.05, 0.05], [0.0, 0.0, 0.2, 0.3, 0.5]])
    results.save_predictions(out, "run1", ["r1", "r2"], [0, 4], [0, 4], proba)
    results.save_predictions(out, "run2", ["r1", "r2"], [0, 4], [1, 4], None)
    got = results.read_predictions(out, "run1")
    assert list(got["review_id"]) == ["r1", "r2"]
    assert list(got["label"]) == [0, 4] and list(got["pred"]) == [0, 4]
    np.testing.assert_array_equal(np.vstack(got["proba"].to_numpy()), proba)
    assert results.read_predictions(out, "run2")["proba"].isna().all()
    with pytest.raises(ValueError, match="run_id"):
        results.save_predictions(out, "../x", ["r1"], [0], [0])
    with pytest.raises(ValueError, match="no saved predictions"):
        results.read_predictions(out, "missing")
