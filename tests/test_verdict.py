"""Plateau detection on hand-made curves and the LSTM − LR verdict on hand-built predictions.

Every expected size, difference and sentence below is worked out by hand in the comments.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from starscale import metrics, verdict

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


SENTENCE = re.compile(
    r"at [\d,]+ rows (?P<phrase>.*): (?P<diff>[+-]\d\.\d{3}) \[(?P<lo>-?\d\.\d{3}), "
    r"(?P<hi>-?\d\.\d{3})\]")
PHRASE_OF = {"the LSTM beats the LR by more than": "lstm_better",
             "the LR beats the LSTM by more than": "lr_better",
             "are equivalent within": "equivalent", "is not worse than": "not_worse",
             "does not beat": "does_not_beat", "inconclusive": "inconclusive"}


def _parse(sentence: str) -> tuple[str, float, float, float]:
    m = SENTENCE.fullmatch(sentence)
    assert m, sentence
    (word,) = [w for key, w in PHRASE_OF.items() if key in m["phrase"]]
    return word, float(m["diff"]), float(m["lo"]), float(m["hi"])


def test_the_six_outcomes_and_their_sentences():
    # margin 0.01; each interval placed by hand against -0.01 and +0.01
    m = 0.01
    cases = [((0.011, 0.05), "lstm_better"), ((-0.05, -0.011), "lr_better"),
             ((-0.009, 0.009), "equivalent"), ((-0.009, 0.03), "not_worse"),
             ((-0.03, 0.009), "does_not_beat"), ((-0.046, 0.016), "inconclusive"),
             ((0.01, 0.05), "not_worse"),          # must clear the margin: lo = m is not > m
             ((-0.01, 0.009), "does_not_beat")]    # lo = -m is not inside
    for (lo, hi), expected in cases:
        assert verdict.outcome(lo, hi, m) == expected, (lo, hi)
        word, _, got_lo, got_hi = _parse(verdict.verdict_sentence(77_946, (lo + hi) / 2, lo, hi,
                                                                  margin=m))
        assert word == expected and (got_lo, got_hi) == (round(lo, 3), round(hi, 3))
    assert (verdict.verdict_sentence(8_000_000, 0.0123, 0.011, 0.020,
                                     "mllib, 4,000 TF-IDF features", margin=0.01)
            == "at 8,000,000 rows the LSTM beats the LR (mllib, 4,000 TF-IDF features) by more "
               "than the margin 0.01: +0.012 [0.011, 0.020]")
    # the Digital Software result of the first study-real run (docs/results-digital-software.md)
    assert (verdict.verdict_sentence(77_946, -0.014, -0.046, 0.016, margin=0.005)
            == "at 77,946 rows inconclusive: the interval of the LSTM against the LR reaches "
               "past both −0.005 and +0.005, so a difference larger than 0.005 either way is "
               "neither shown nor ruled out: -0.014 [-0.046, 0.016]")
    assert set(verdict.OUTCOMES) == set(PHRASE_OF.values())
    with pytest.raises(ValueError, match="margin"):
        verdict.outcome(0, 1, -0.1)


def test_lstm_clearly_better():
    lstm = _predictions(40)                    # all right: every metric 1.0
    lr = _predictions(20)                      # 20 of 40 right: every metric 0.5
    paired = verdict.paired_comparison(lstm, lr.sample(frac=1.0, random_state=3), n=500, seed=1,
                                       margin=0.005)
    for m in ("score", "accuracy", "macro_f1"):
        assert paired[m]["diff"] == pytest.approx(0.5)
        assert paired[m]["lo"] > 0.005 and paired[m]["outcome"] == "lstm_better"
    s = paired["score"]
    word, diff, lo, hi = _parse(verdict.verdict_sentence(200_000, s["diff"], s["lo"], s["hi"],
                                                         margin=0.005))
    assert (word, diff) == ("lstm_better", 0.5) and 0 < lo <= 0.5 <= hi


def test_lstm_clearly_worse():
    paired = verdict.paired_comparison(_predictions(12), _predictions(32), n=500, seed=1)
    s = paired["score"]                        # 12/40 - 32/40 = -0.5
    assert s["diff"] == pytest.approx(-0.5) and paired["accuracy"]["diff"] == pytest.approx(-0.5)
    word, diff, lo, hi = _parse(verdict.verdict_sentence(100_000, s["diff"], s["lo"], s["hi"]))
    assert (word, diff) == ("lr_better", -0.5) and lo <= -0.5 <= hi < 0


def test_lstm_equal():
    # LSTM wrong on rows 0..9 of each class, LR wrong on rows 10..19: the same confusion matrix
    # (30/40 right everywhere, diff exactly 0), but different rows, so the interval straddles 0.
    lstm = _predictions(0, wrong_rows=slice(0, 10))
    lr = _predictions(0, wrong_rows=slice(10, 20))
    paired = verdict.paired_comparison(lstm, lr, n=500, seed=1)
    s = paired["score"]
    assert s["diff"] == pytest.approx(0.0) and s["lo"] < 0 < s["hi"]
    word, diff, _, _ = _parse(verdict.verdict_sentence(50_000, s["diff"], s["lo"], s["hi"]))
    assert word == "inconclusive" and diff == 0.0
    # a model against itself: [0, 0], equivalent within any margin > 0 (none within 0)
    same = verdict.paired_comparison(lstm, lstm, n=100, seed=1, margin=0.01)["score"]
    assert (same["lo"], same["hi"], same["outcome"]) == (0.0, 0.0, "equivalent")


# --------------------------------------------------------------------------- seeds
def test_seeded_interval_has_the_known_answer():
    # 400 test rows per star. LR: 3 seeds, each right on 240 of 400 rows of every star → every
    # metric 0.60. LSTM: 3 seeds right on 300, 320, 340 → 0.75, 0.80, 0.85. The true LSTM − LR
    # difference is 0.80 − 0.60 = +0.20 with seed noise ±0.05 around it (sd 0.05).
    lstm = [_predictions(k, per_class=400) for k in (300, 320, 340)]
    lr = [_predictions(240, per_class=400, wrong_rows=slice(i * 10, i * 10 + 160))
          for i in range(3)]
    out = verdict.replicated_comparison(lstm, lr, n=2000, seed=3, margin=0.005)
    s = out["score"]
    assert s["diff"] == pytest.approx(0.20)
    assert s["a_runs"] == pytest.approx([0.75, 0.80, 0.85]) and s["b_runs"] == pytest.approx([0.6] * 3)
    assert s["a_sd"] == pytest.approx(0.05) and s["b_sd"] == pytest.approx(0.0)
    # an interval for the mean of 3 LSTM seeds (the LR has no seed spread): the seed part
    # alone is se 0.05 / sqrt(3) = 0.02887; with a t quantile above z and the test rows' noise
    # added, wider than 0.20 ± 1.96 * 0.02887 = [0.1434, 0.2566]; narrower than the seeds'
    # t interval with 2 df widened by the test noise, within [0.05, 0.35]
    assert 0.05 < s["lo"] < 0.1434 and 0.2566 < s["hi"] < 0.35
    assert 2.0 < s["df"] < float("inf")
    assert s["outcome"] == "lstm_better" and s["seed_var_b"] == 0.0
    assert s["seed_var_a"] == pytest.approx(0.05 ** 2 / 3)
    # one seed of each: only the test rows' noise, far narrower than the seeds' spread
    single = verdict.replicated_comparison(lstm[1:2], lr[:1], n=2000, seed=3)["score"]
    assert (s["hi"] - s["lo"]) - (single["hi"] - single["lo"]) > 0.1


def test_seed_noise_can_turn_a_win_into_an_inconclusive_result():
    # LSTM seeds 0.55, 0.65, 0.75 against an LR at 0.60: mean +0.05. Its best seed alone beats
    # the LR clearly (+0.15, tight interval), but over its seeds the interval for the mean is
    # +0.05 ± 4.303 * 0.1 / sqrt(3) = [-0.198, 0.298] at least: past both -0.005 and +0.005.
    lstm = [_predictions(k, per_class=400) for k in (220, 260, 300)]
    lr = [_predictions(240, per_class=400)]
    best_seed = verdict.replicated_comparison(lstm[2:], lr, n=2000, seed=5, margin=0.005)
    assert best_seed["score"]["outcome"] == "lstm_better"
    out = verdict.replicated_comparison(lstm, lr, n=2000, seed=5, margin=0.005)["score"]
    assert out["diff"] == pytest.approx(0.05) and out["lo"] < -0.19 and out["hi"] > 0.29
    assert out["outcome"] == "inconclusive"


# --------------------------------------------------------------------------- offsets
def _biased_proba(per_class: int = 50):
    """Rows of every star; the true class gets probability ∝ e^1, the others e^0, except that
    1★ rows give 5★ e^1.25: without offsets no 1★ row is predicted 1★ (recall 0, score 0)."""
    labels = np.repeat(np.arange(5), per_class)
    logits = np.zeros((labels.size, 5))
    logits[np.arange(labels.size), labels] = 1.0
    logits[labels == 0, 4] = 1.25
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, proba


def test_offsets_fitted_on_validation_fix_a_biased_model():
    labels, proba = _biased_proba()
    raw = metrics.summary(labels, proba.argmax(axis=1))
    assert raw["per_class"][0]["recall"] == 0.0 and raw["score"] == 0.0
    fit = metrics.fit_offsets(labels, proba)
    # 1★ needs an offset above 0.25 over 5★ (and below 1.0, so 2..4★ rows stay right)
    assert 0.25 < fit["offsets"][0] - fit["offsets"][4] < 1.0
    assert fit["score_before"] == 0.0 and fit["score_after"] == pytest.approx(1.0)
    shifted = metrics.offset_predictions(proba, fit["offsets"])
    assert (shifted == labels).all()


def test_offsets_leave_a_good_model_alone():
    labels = np.repeat(np.arange(5), 20)
    proba = np.full((labels.size, 5), 0.1)
    proba[np.arange(labels.size), labels] = 0.6
    fit = metrics.fit_offsets(labels, proba)
    assert fit["offsets"] == [0.0] * 5 and fit["score_after"] == 1.0


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
def _row(run_id, model, size, method, score, created, val=None, **extra):
    return {"run_id": run_id, "model": model, "tag": f"{size}_{method}", "sample_size": str(size),
            "sample_method": method, "score": score, "created_utc": created,
            "val_score": score if val is None else val, **extra}


LR4K = {"engine": "mllib", "encode.tfidf_features": 4000, "encode.tfidf_hashed": False}
LRHASH = {"engine": "mllib", "encode.tfidf_features": 1048576, "encode.tfidf_hashed": True}


def test_comparisons_use_the_largest_shared_size_and_the_runs_chosen_on_validation():
    results = pd.DataFrame([
        _row("lr4k_50", "lr", 50000, "none", 0.40, "t1", **LR4K),
        # at 100k the under-sampled LR has the better test score but the worse validation score
        _row("lr4k_100", "lr", 100000, "none", 0.45, "t1", val=0.46, **LR4K),
        _row("lr4k_100u", "lr", 100000, "random_under", 0.47, "t1", val=0.44, **LR4K),
        _row("lrh_50", "lr", 50000, "none", 0.42, "t1", **LRHASH),
        _row("lstm_50", "lstm", 50000, "none", 0.30, "t1", engine="horovod-local"),
        _row("lstm_100_old", "lstm", 100000, "none", 0.90, "t1", engine="horovod-local"),
        _row("lstm_100", "lstm", 100000, "none", 0.35, "t2", engine="horovod-local"),  # rerun
        _row("lstm_100u", "lstm", 100000, "random_under", 0.20, "t2", val=0.36,
             engine="horovod-local"),
        _row("lstm_200", "lstm", 200000, "none", 0.50, "t1", engine="horovod-local"),
    ])
    table = verdict.annotate(results)
    curves = table[table["in_curve"]]
    assert sorted(curves["run_id"]) == sorted(set(results["run_id"]) - {"lstm_100_old"})
    comps = {c["lr_series"]: c for c in verdict.comparisons(table)}
    assert set(comps) == {"LR (mllib, 4,000 TF-IDF features)",
                          "LR (mllib, hashed 1,048,576 TF-IDF features)"}
    four_k = comps["LR (mllib, 4,000 TF-IDF features)"]
    # chosen on validation: the LR without sampling (0.46 > 0.44), the under-sampled LSTM
    # (0.36 > 0.35), although their test scores say the opposite
    assert (four_k["rows"], four_k["lstm_run"], four_k["lr_run"]) == \
        (100000, "lstm_100u", "lr4k_100")
    assert (four_k["lstm_runs"], four_k["lr_runs"]) == (["lstm_100u"], ["lr4k_100"])
    hashed = comps["LR (mllib, hashed 1,048,576 TF-IDF features)"]
    assert (hashed["rows"], hashed["lstm_run"], hashed["lr_run"]) == (50000, "lstm_50", "lrh_50")


def test_an_lr_at_full_size_under_sampling_gets_the_rows_before_sampling():
    # The LR's tag is the encode tag; the sample manifest is keyed by the sample tag.
    row = {**_row("lr_full", "lr", "full", "random_under", 0.5, "t1", train_rows=2_400_000,
                  **LR4K), "tag": "full_random_under_top4000"}
    full_rows = {"full_random_under": 7_200_000}
    assert verdict.train_rows(row, full_rows) == 7_200_000
    lstm = {**_row("lstm_full", "lstm", "full", "random_under", 0.5, "t1",
                   train_rows=2_400_000), "tag": "full_random_under"}
    assert verdict.train_rows(lstm, full_rows) == 7_200_000
    # both enter the comparison at the same size and with the same sampler
    table = verdict.annotate(pd.DataFrame([row, lstm]), full_rows)
    (comp,) = verdict.comparisons(table)
    assert (comp["rows"], comp["lr_sampler"], comp["lstm_sampler"]) == \
        (7_200_000, "random_under", "random_under")


def test_full_size_comes_from_the_sample_manifest():
    row = _row("lr_full", "lr", "full", "none", 0.5, "t1", train_rows=123)
    assert verdict.train_rows(row, {"full_none": 7_000_000}) == 7_000_000
    assert verdict.train_rows(row, {}) == 123      # fallback: the trainer's train_rows column
    assert verdict.train_rows(_row("x", "lr", 50000, "none", 0.5, "t1"), {}) == 50000


def test_replicates_enter_the_verdict_not_the_curves():
    rows = [_row("lstm_f", "lstm", "full", "none", 0.5, "t1", engine="horovod-local")]
    rows += [{**_row(f"lstm_f{k}", "lstm", "full", "none", 0.6, "t1", engine="horovod-local"),
              "tag": f"full_none_r{k}", "replicate": k} for k in (1, 2)]
    rows += [{**_row("lr_f", "lr", "full", "none", 0.4, "t1", **LR4K), "tag": "full_none_top4000"}]
    table = verdict.annotate(pd.DataFrame(rows), {"full_none": 1000, "full_none_r1": 1000,
                                                  "full_none_r2": 1000})
    assert list(table[table["in_curve"]]["run_id"]) == ["lstm_f", "lr_f"]
    (comp,) = verdict.comparisons(table)
    assert comp["lstm_runs"] == ["lstm_f", "lstm_f1", "lstm_f2"] and comp["lr_runs"] == ["lr_f"]


def test_decide_with_offsets_and_the_primary_result():
    # Every model's validation and test predictions are the same biased probabilities; the LSTM
    # is right everywhere. Both LR settings are at the same size: both enter the primary result.
    labels, proba = _biased_proba()
    ids = [f"r{i:03d}" for i in range(labels.size)]
    frame = pd.DataFrame({"review_id": ids, "label": labels, "pred": proba.argmax(axis=1),
                          "proba": list(proba)})
    good = frame.assign(pred=labels)            # the LSTM: right everywhere, raw score 1.0
    results = pd.DataFrame([
        _row("lstm", "lstm", 1000, "none", 1.0, "t1", val=0.9, engine="horovod-local"),
        _row("lr4k", "lr", 1000, "none", 0.0, "t1", val=0.1, **LR4K),
        _row("lrh", "lr", 1000, "none", 0.0, "t1", val=0.2, **LRHASH)])

    def load(run_id, split="test"):
        return good if run_id == "lstm" else frame

    decided = verdict.decide(verdict.annotate(results), load, n=200, seed=1, margin=0.005)
    assert all(d["primary"] for d in decided) and len(decided) == 2
    for d in decided:
        # raw: 1.0 − 0.0 on every resample; with offsets fitted on validation the LR is
        # perfect too: 1.0 − 1.0
        assert d["raw"]["score"]["diff"] == pytest.approx(1.0)
        assert d["offsets"]["score"]["diff"] == pytest.approx(0.0)
        assert d["decided_on"] == "raw" and d["outcome"] == "lstm_better"
    primary = verdict.primary_result(decided, margin=0.005)
    assert primary["outcome"] == "lstm_better" and primary["warnings"] == []
    assert primary["sentence"].startswith(
        "Primary result (raw score, mean over seeds; the LSTM against every LR setting selected "
        "on validation: mllib, 4,000 TF-IDF features; mllib, hashed 1,048,576 TF-IDF features): "
        "at 1,000 rows the LSTM beats the best of these LR settings by more than the margin")
    on_offsets = verdict.decide(verdict.annotate(results), load, n=200, seed=1, margin=0.005,
                                decide_on="offsets")
    assert {d["outcome"] for d in on_offsets} == {"equivalent"}      # [0, 0] inside ±0.005
    assert verdict.primary_result(on_offsets, margin=0.005)["outcome"] == "equivalent"


def _decided(label: str, diff: float, lo: float, se: float, **flags) -> dict:
    return {"primary": True, "decided_on": "raw", "rows": 77_946, "lr_label": label,
            "lr_series": f"LR ({label})", **flags,
            "raw": {"score": {"diff": diff, "lo": lo, "hi": diff + 1.959964 * se, "se": se,
                              "df": float("inf")}}}


def test_primary_result_needs_every_lr_setting_and_flags_weak_comparators():
    # LSTM − 4k LR +0.030 [+0.0104, ...] and LSTM − hashed LR +0.020 [+0.0004, ...]: against
    # the best LR the lower end is the smaller one, 0.0004; the upper ends widen to
    # z(1 - 0.05/4) = 2.241403 for two settings: 0.030 + 2.241403 * 0.010 = 0.05241 and
    # 0.020 + 2.241403 * 0.010 = 0.04241 -> hi 0.04241. 0.0004 is not above 0.01: not_worse.
    both = [_decided("4k", 0.030, 0.0104, 0.010), _decided("hashed", 0.020, 0.0004, 0.010,
                                                            lr_converged=False)]
    primary = verdict.primary_result(both, alpha=0.05, margin=0.01)
    assert (primary["lo"], primary["hi"]) == pytest.approx((0.0004, 0.0424140), abs=1e-6)
    assert primary["diff"] == pytest.approx(0.020) and primary["outcome"] == "not_worse"
    # against the 4k LR alone the LSTM would be better by more than the margin
    alone = verdict.primary_result(both[:1], alpha=0.05, margin=0.01)
    assert alone["outcome"] == "lstm_better" and alone["warnings"] == []
    (warning,) = primary["warnings"]
    assert warning.startswith("Warning: the comparator LR (hashed) did not converge")
    edge = verdict.primary_result([_decided("4k", 0.03, 0.0104, 0.01, lr_grid_edge=True)],
                                  margin=0.01)
    assert "chosen at an edge of lr.reg_grid" in edge["warnings"][0]
    assert verdict.primary_result([], margin=0.01) is None


def test_comparator_flags_read_convergence_and_the_grid_edge():
    grid = lambda chosen: json.dumps([{"reg_param": r, "selected": r == chosen}  # noqa: E731
                                      for r in (1e-5, 1e-4, 1e-3)])
    table = pd.DataFrame([
        {"run_id": "a", "converged": True, "lr_grid": grid(1e-4)},
        {"run_id": "b", "converged": True, "lr_grid": grid(1e-5)},     # at the low end
        {"run_id": "c", "converged": False, "lr_grid": grid(1e-4)},
        {"run_id": "d", "converged": None, "lr_grid": None}])
    assert verdict.comparator_flags(table, ["a"]) == {
        "lr_converged": True, "lr_grid_edge": False, "lr_reg_params": [1e-4]}
    assert verdict.comparator_flags(table, ["a", "b"])["lr_grid_edge"] is True
    assert verdict.comparator_flags(table, ["a", "c"])["lr_converged"] is False
    assert verdict.comparator_flags(table, ["d"]) == {
        "lr_converged": None, "lr_grid_edge": None, "lr_reg_params": []}
    assert verdict.grid_edge([1e-5, 1e-4], 1e-5) is False      # two points: no interior
    assert verdict.grid_edge([1e-5, 1e-4, 1e-3], 1e-3) is True


def test_series_labels():
    assert verdict.series_label({"model": "lstm", "engine": "horovod-spark"}) == "LSTM"
    assert verdict.series_label({"model": "lr", **LR4K, "lr.class_weight": "balanced"}) == \
        "LR (mllib, 4,000 TF-IDF features)"
    assert verdict.series_label({"model": "lr", **LRHASH, "lr.class_weight": "none"}) == \
        "LR (mllib, hashed 1,048,576 TF-IDF features, class_weight none)"
    assert verdict.series_label({"model": "lr", "engine": None}) == "LR"


def test_an_evaluate_row_does_not_replace_the_trained_run():
    trained = {**_row("lr_a", "lr", 1000, "none", 0.5, "t1", **LR4K), "stage": "train-lr"}
    rescored = {**_row("ev_a", "lr", 1000, "none", 0.5, "t2", **LR4K), "stage": "evaluate",
                "val_score": None}
    table = verdict.annotate(pd.DataFrame([trained, rescored]))
    assert list(table[table["in_curve"]]["run_id"]) == ["lr_a"]
