"""Plateau detection on hand-made curves and the LSTM − LR verdict on hand-built predictions.

Every expected size, difference and sentence below is worked out by hand in the comments.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from starscale import verdict

K = 1000
MIN_GAIN = 0.005


# --------------------------------------------------------------------------- plateau
def test_flat_curve_plateaus_at_the_first_size():
    # gains per doubling: 0, +0.001, -0.001: all below 0.005 from the first point on
    found = verdict.plateau([(50 * K, 0.50), (100 * K, 0.50), (200 * K, 0.501), (400 * K, 0.50)],
                            MIN_GAIN)
    assert found["status"] == "plateau"
    assert found["plateau_rows"] == 50 * K


def test_rising_curve_has_no_plateau():
    # +0.02 per doubling on every segment
    found = verdict.plateau([(50 * K, 0.40), (100 * K, 0.42), (200 * K, 0.44), (400 * K, 0.46)],
                            MIN_GAIN)
    assert found["status"] == "rising"
    assert found["plateau_rows"] is None
    assert [round(s["gain_per_doubling"], 6) for s in found["segments"]] == [0.02, 0.02, 0.02]


def test_rising_then_flat_plateaus_where_the_gains_stop():
    # gains: +0.03, +0.02, +0.002, +0.001 → every doubling after 200k gains < 0.005
    found = verdict.plateau([(50 * K, 0.40), (100 * K, 0.43), (200 * K, 0.45), (400 * K, 0.452),
                             (800 * K, 0.453)], MIN_GAIN)
    assert found["plateau_rows"] == 200 * K
    assert [s["below"] for s in found["segments"]] == [False, False, True, True]


def test_noisy_plateau_within_the_threshold():
    # gains: +0.04, +0.02, -0.002, +0.004, -0.003 (noise smaller than 0.005 per doubling)
    found = verdict.plateau([(50 * K, 0.40), (100 * K, 0.44), (200 * K, 0.46), (400 * K, 0.458),
                             (800 * K, 0.462), (1600 * K, 0.459)], MIN_GAIN)
    assert found["plateau_rows"] == 200 * K


def test_noisy_bump_above_the_threshold_moves_the_plateau_after_it():
    # gains: +0.05, +0.001, -0.002, +0.008, +0.001 → the late +0.008 still counts as a gain
    found = verdict.plateau([(50 * K, 0.40), (100 * K, 0.45), (200 * K, 0.451), (400 * K, 0.449),
                             (800 * K, 0.457), (1600 * K, 0.458)], MIN_GAIN)
    assert found["plateau_rows"] == 800 * K


def test_gain_is_normalised_per_doubling():
    # 50k → 200k is 2 doublings: +0.008 / 2 = 0.004 < 0.005; 200k → 800k: +0.002 / 2 = 0.001.
    # Unnormalised, the first step (+0.008) would count as a gain and the plateau would be 200k.
    found = verdict.plateau([(800 * K, 0.410), (50 * K, 0.40), (200 * K, 0.408)], MIN_GAIN)
    assert found["plateau_rows"] == 50 * K
    assert [s["doublings"] for s in found["segments"]] == [2.0, 2.0]
    assert found["segments"][0]["gain_per_doubling"] == pytest.approx(0.004)


def test_last_segment_still_rising_means_no_plateau():
    # flat at first, then +0.01 per doubling at the end: still rising
    found = verdict.plateau([(50 * K, 0.40), (100 * K, 0.401), (200 * K, 0.411)], MIN_GAIN)
    assert found["plateau_rows"] is None and found["status"] == "rising"


def test_plateau_needs_two_points_and_distinct_sizes():
    assert verdict.plateau([(50 * K, 0.4)], MIN_GAIN)["status"] == "too_few_points"
    with pytest.raises(ValueError, match="same size"):
        verdict.plateau([(50 * K, 0.4), (50 * K, 0.41)], MIN_GAIN)
    with pytest.raises(ValueError, match="rows > 0"):
        verdict.plateau([(0, 0.4), (50 * K, 0.41)], MIN_GAIN)


# --------------------------------------------------------------------------- verdict
def _predictions(correct_per_class: int, per_class: int = 40, wrong_rows: slice | None = None):
    """per_class test rows of each star (labels 0..4), ids r0000...; rows with index inside a
    class below correct_per_class (or outside wrong_rows) are right, the others are predicted
    one class up (label + 1 mod 5). With k right of n in every class, every recall and every
    precision is k/n (each class receives n - k wrong rows from the class below), so score,
    accuracy and macro F1 are all k/n."""
    labels = np.repeat(np.arange(5), per_class)
    within = np.tile(np.arange(per_class), 5)
    if wrong_rows is None:
        wrong = within >= correct_per_class
    else:
        wrong = (within >= wrong_rows.start) & (within < wrong_rows.stop)
    pred = np.where(wrong, (labels + 1) % 5, labels)
    ids = [f"r{i:04d}" for i in range(labels.size)]
    return pd.DataFrame({"review_id": ids, "label": labels, "pred": pred})


def _parse(sentence: str) -> tuple[str, float, float, float]:
    m = re.fullmatch(r"the LSTM (beats|does not beat|ties) the LR(?: \(.*\))? at [\d,]+ rows: "
                     r"([+-]\d\.\d{3}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\]", sentence)
    assert m, sentence
    return m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4))


def test_sentence_format():
    assert (verdict.verdict_sentence(8_000_000, 0.0123, 0.004, 0.020,
                                     "mllib, 4,000 TF-IDF features")
            == "the LSTM beats the LR (mllib, 4,000 TF-IDF features) at 8,000,000 rows: "
               "+0.012 [0.004, 0.020]")
    assert (verdict.verdict_sentence(200_000, -0.001, -0.010, 0.008)
            == "the LSTM ties the LR at 200,000 rows: -0.001 [-0.010, 0.008]")
    assert (verdict.verdict_sentence(50_000, -0.131, -0.2, -0.05)
            == "the LSTM does not beat the LR at 50,000 rows: -0.131 [-0.200, -0.050]")


def test_lstm_clearly_better():
    lstm = _predictions(40)                    # all right: every metric 1.0
    lr = _predictions(20)                      # 20 of 40 right: every metric 0.5
    paired = verdict.paired_comparison(lstm, lr.sample(frac=1.0, random_state=3), n=500, seed=1)
    for m in ("score", "accuracy", "macro_f1"):
        assert paired[m]["diff"] == pytest.approx(0.5)
        assert paired[m]["lo"] > 0 and paired[m]["outcome"] == "beats"
    s = paired["score"]
    sentence = verdict.verdict_sentence(200_000, s["diff"], s["lo"], s["hi"])
    word, diff, lo, hi = _parse(sentence)
    assert sentence.startswith("the LSTM beats the LR at 200,000 rows: +0.500 [")
    assert (word, diff) == ("beats", 0.5) and 0 < lo <= 0.5 <= hi


def test_lstm_clearly_worse():
    paired = verdict.paired_comparison(_predictions(12), _predictions(32), n=500, seed=1)
    s = paired["score"]                        # 12/40 - 32/40 = -0.5
    assert s["diff"] == pytest.approx(-0.5) and paired["accuracy"]["diff"] == pytest.approx(-0.5)
    word, diff, lo, hi = _parse(verdict.verdict_sentence(100_000, s["diff"], s["lo"], s["hi"]))
    assert (word, diff) == ("does not beat", -0.5) and lo <= -0.5 <= hi < 0


def test_lstm_equal():
    # LSTM wrong on rows 0..9 of each class, LR wrong on rows 10..19: the same confusion matrix
    # (30/40 right everywhere, diff exactly 0), but different rows, so the interval straddles 0.
    lstm = _predictions(0, wrong_rows=slice(0, 10))
    lr = _predictions(0, wrong_rows=slice(10, 20))
    paired = verdict.paired_comparison(lstm, lr, n=500, seed=1)
    s = paired["score"]
    assert s["diff"] == pytest.approx(0.0) and s["lo"] < 0 < s["hi"]
    word, diff, _, _ = _parse(verdict.verdict_sentence(50_000, s["diff"], s["lo"], s["hi"]))
    assert word == "ties" and diff == 0.0
    same = verdict.paired_comparison(lstm, lstm, n=100, seed=1)["score"]   # [0, 0] contains 0
    assert (same["lo"], same["hi"], same["outcome"]) == (0.0, 0.0, "ties")


def test_different_test_rows_are_an_error():
    lstm, lr = _predictions(30), _predictions(20)
    with pytest.raises(ValueError, match="not on the same test rows"):
        verdict.paired_comparison(lstm, lr.iloc[1:], n=10, seed=1)
    relabelled = lr.assign(review_id=lr["review_id"].str.replace("r0000", "x0000"))
    with pytest.raises(ValueError, match="not on the same test rows"):
        verdict.paired_comparison(lstm, relabelled, n=10, seed=1)
    wrong_label = lr.assign(label=np.where(lr.index == 5, 4, lr["label"]))
    with pytest.raises(ValueError, match="true label"):
        verdict.paired_comparison(lstm, wrong_label, n=10, seed=1)
    with pytest.raises(ValueError, match="repeated"):
        verdict.paired_comparison(pd.concat([lstm, lstm.iloc[:1]]), lr, n=10, seed=1)


# --------------------------------------------------------------------------- which runs
def _row(run_id, model, size, method, score, created, **extra):
    return {"run_id": run_id, "model": model, "tag": f"{size}_{method}", "sample_size": str(size),
            "sample_method": method, "score": score, "created_utc": created, **extra}


LR4K = {"engine": "mllib", "encode.tfidf_features": 4000, "encode.tfidf_hashed": False}
LRHASH = {"engine": "mllib", "encode.tfidf_features": 1048576, "encode.tfidf_hashed": True}


def test_comparisons_use_the_largest_shared_size_per_lr_setting_and_the_best_runs():
    results = pd.DataFrame([
        _row("lr4k_50", "lr", 50000, "none", 0.40, "t1", **LR4K),
        _row("lr4k_100", "lr", 100000, "none", 0.45, "t1", **LR4K),
        _row("lr4k_100u", "lr", 100000, "random_under", 0.47, "t1", **LR4K),
        _row("lrh_50", "lr", 50000, "none", 0.42, "t1", **LRHASH),
        _row("lstm_50", "lstm", 50000, "none", 0.30, "t1", engine="horovod-local"),
        _row("lstm_100_old", "lstm", 100000, "none", 0.90, "t1", engine="horovod-local"),
        _row("lstm_100", "lstm", 100000, "none", 0.35, "t2", engine="horovod-local"),  # rerun
        _row("lstm_200", "lstm", 200000, "none", 0.50, "t1", engine="horovod-local"),
    ])
    curves = verdict.curve_table(results)
    assert sorted(curves["run_id"]) == sorted(set(results["run_id"]) - {"lstm_100_old"})
    comps = {c["lr_series"]: c for c in verdict.comparisons(curves)}
    assert set(comps) == {"LR (mllib, 4,000 TF-IDF features)",
                          "LR (mllib, hashed 1,048,576 TF-IDF features)"}
    four_k = comps["LR (mllib, 4,000 TF-IDF features)"]
    assert (four_k["rows"], four_k["lstm_run"], four_k["lr_run"]) == \
        (100000, "lstm_100", "lr4k_100u")
    hashed = comps["LR (mllib, hashed 1,048,576 TF-IDF features)"]
    assert (hashed["rows"], hashed["lstm_run"], hashed["lr_run"]) == (50000, "lstm_50", "lrh_50")


def test_full_size_comes_from_the_sample_manifest():
    row = _row("lr_full", "lr", "full", "none", 0.5, "t1", train_rows=123)
    assert verdict.train_rows(row, {"full_none": 7_000_000}) == 7_000_000
    assert verdict.train_rows(row, {}) == 123      # fallback: the trainer's train_rows column
    assert verdict.train_rows(_row("x", "lr", 50000, "none", 0.5, "t1"), {}) == 50000


def test_series_labels():
    assert verdict.series_label({"model": "lstm", "engine": "horovod-spark"}) == "LSTM"
    assert verdict.series_label({"model": "lr", **LR4K, "lr.class_weight": "balanced"}) == \
        "LR (mllib, 4,000 TF-IDF features)"
    assert verdict.series_label({"model": "lr", **LRHASH, "lr.class_weight": "none"}) == \
        "LR (mllib, hashed 1,048,576 TF-IDF features, class_weight none)"
    assert verdict.series_label({"model": "lr", "engine": None}) == "LR"
