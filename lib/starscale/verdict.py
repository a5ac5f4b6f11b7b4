"""The answer to the study's question: plateau detection and the paired LSTM − LR verdict.

Everything here is a pure function of the results table (``starscale.results``), saved test
predictions and plain values; the report stage does the reading and writing.

- ``plateau``: on a learning curve of (train rows, score) points, the gain per doubling of each
  segment between consecutive points is ``Δscore / log2(rows_b / rows_a)``; the curve has
  plateaued at the smallest size after which *every* segment gains less than ``min_gain``.
- ``select``: the cell (sampler) of each model and size chosen by the *validation* score;
  ``comparisons``: the selected LSTM against each selected LR setting at the largest shared
  size, with every seed replicate of both (the test split is never used to choose).
- ``replicated_comparison``: LSTM minus LR on the same test rows (joined by review_id), the
  mean over each model's seed replicates with an interval for that mean
  (``metrics.seeded_bootstrap_diff``: seed variance + paired test-row bootstrap, Welch–
  Satterthwaite t), raw and with decision offsets fitted on validation.
- ``outcome`` / ``outcome_phrase`` / ``verdict_sentence``: the pre-registered rule — six
  outcomes of the interval against −margin and +margin, one sentence each.
- ``primary_result``: the answer to the mission's question, the LSTM against every LR setting
  selected on validation (it beats the plateau only if it beats each), with a warning line for
  a comparator that did not converge or sits at its grid's edge (``comparator_flags``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from starscale import metrics

# The earlier single-machine study's scores (harmonic-mean metric) on the Wireless corpus, drawn
# on the learning curve of whatever corpus a run used (the report says so).
STUDY_POINTS: tuple[dict[str, Any], ...] = (
    {"model": "lr", "rows": 50_000, "score": 0.4656, "label": "study LR 0.4656 @ 50k (Wireless)"},
    {"model": "lr", "rows": 8_000_000, "score": 0.5175,
     "label": "study LR 0.5175 @ 8M (Wireless, plateau)"},
    {"model": "lstm", "rows": 200_000, "score": 0.334, "label": "study LSTM 0.334 @ 200k (Wireless)"},
)

# Results columns read here (results.ResultRow: every trainer writes them): the training rows
# of a run (used only when its sample_size is 'full' and no sample manifest says how many rows
# that was) and the LR's feature setting (the encode section of its params).
TRAIN_ROWS_COLUMN = "train_rows"
SAMPLE_TAG_COLUMN = "sample_tag"
REPLICATE_COLUMN = "replicate"
VAL_SCORE_COLUMN = "val_score"
DECIDE_ON = ("raw", "offsets")
FEATURES_COLUMN = "encode.tfidf_features"
HASHED_COLUMN = "encode.tfidf_hashed"


# --------------------------------------------------------------------------- plateau
def plateau(points: Iterable[tuple[float, float]], min_gain: float) -> dict[str, Any]:
    """Plateau of a learning curve of (train rows, score) points.

    Returns {"plateau_rows": the smallest size after which every doubling gains < min_gain, or
    None while the last segment still gains >= min_gain (or with fewer than 2 points);
    "status": "plateau" | "rising" | "too_few_points"; "min_gain"; "segments": one
    {from_rows, to_rows, from_score, to_score, doublings, gain_per_doubling, below} per pair of
    consecutive points (the evidence)}. A drop counts as a gain below min_gain. Noise above
    min_gain late on the curve moves the plateau after it: a plateau is only claimed when no
    later doubling still gains.
    """
    if not (isinstance(min_gain, (int, float)) and min_gain >= 0):
        raise ValueError(f"plateau: min_gain must be a number >= 0, got {min_gain!r}")
    pts = sorted((float(r), float(s)) for r, s in points)
    for rows, score_ in pts:
        if not (math.isfinite(rows) and rows > 0 and math.isfinite(score_)):
            raise ValueError(f"plateau: need rows > 0 and finite scores, got ({rows}, {score_})")
    sizes = [r for r, _ in pts]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"plateau: more than one point at the same size in {sizes}")
    segments = []
    for (r0, s0), (r1, s1) in zip(pts, pts[1:]):
        doublings = math.log2(r1 / r0)
        gain = (s1 - s0) / doublings
        segments.append({"from_rows": _int(r0), "to_rows": _int(r1), "from_score": s0,
                         "to_score": s1, "doublings": doublings, "gain_per_doubling": gain,
                         "below": gain < min_gain})
    out = {"min_gain": float(min_gain), "segments": segments, "points": len(pts)}
    if not segments:
        return {**out, "plateau_rows": None, "status": "too_few_points"}
    if not segments[-1]["below"]:
        return {**out, "plateau_rows": None, "status": "rising"}
    start = len(segments) - 1
    while start > 0 and segments[start - 1]["below"]:
        start -= 1
    return {**out, "plateau_rows": segments[start]["from_rows"], "status": "plateau"}


def _int(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --------------------------------------------------------------------------- verdict
# Outcomes of the pre-registered decision rule (docs/report.md) on an interval [lo, hi] of
# LSTM − LR and the margin m (the effect size of interest), checked in this order.
LSTM_BETTER = "lstm_better"          # lo > m
LR_BETTER = "lr_better"              # hi < −m
EQUIVALENT = "equivalent"            # −m < lo and hi < m (two one-sided tests)
NOT_WORSE = "not_worse"              # lo > −m only: no loss larger than m, no gain shown
DOES_NOT_BEAT = "does_not_beat"      # hi < m only: no gain of m, a loss not ruled out
INCONCLUSIVE = "inconclusive"        # lo ≤ −m and hi ≥ m: settles nothing
OUTCOMES = (LSTM_BETTER, LR_BETTER, EQUIVALENT, NOT_WORSE, DOES_NOT_BEAT, INCONCLUSIVE)


def outcome(lo: float, hi: float, margin: float = 0.0) -> str:
    """The decision rule on an interval [lo, hi] of LSTM − LR with margin m >= 0: one of
    OUTCOMES (lstm_better if lo > m; lr_better if hi < −m; equivalent if both ends lie inside
    (−m, m); not_worse if only lo > −m; does_not_beat if only hi < m; else inconclusive)."""
    if not (isinstance(margin, (int, float)) and margin >= 0):
        raise ValueError(f"outcome: margin must be a number >= 0, got {margin!r}")
    if lo > margin:
        return LSTM_BETTER
    if hi < -margin:
        return LR_BETTER
    if lo > -margin and hi < margin:
        return EQUIVALENT
    if lo > -margin:
        return NOT_WORSE
    if hi < margin:
        return DOES_NOT_BEAT
    return INCONCLUSIVE


def outcome_phrase(found: str, lr: str, margin: float) -> str:
    """The one sentence of each outcome (without where and numbers), lr naming the comparator:
    the report, verdict.json, the terminal summary and the docs all use these words."""
    m = f"{margin:g}"
    phrases = {
        LSTM_BETTER: f"the LSTM beats {lr} by more than the margin {m}",
        LR_BETTER: f"{lr} beats the LSTM by more than the margin {m}",
        EQUIVALENT: f"the LSTM and {lr} are equivalent within ±{m}",
        NOT_WORSE: (f"the LSTM is not worse than {lr} by more than {m}; a gain larger than {m} "
                    f"is not shown"),
        DOES_NOT_BEAT: (f"the LSTM does not beat {lr} by {m}; a loss larger than {m} is not "
                        f"ruled out"),
        INCONCLUSIVE: (f"inconclusive: the interval of the LSTM against {lr} reaches past both "
                       f"−{m} and +{m}, so a difference larger than {m} either way is neither "
                       f"shown nor ruled out"),
    }
    if found not in phrases:
        raise ValueError(f"outcome_phrase: {found!r} is not one of {OUTCOMES}")
    return phrases[found]


def verdict_sentence(rows: int, diff: float, lo: float, hi: float,
                     lr_label: str | None = None, margin: float = 0.0) -> str:
    """The decision as a sentence, e.g. 'at 200,000 rows the LSTM beats the LR (…) by more than
    the margin 0.01: +0.052 [0.031, 0.070]' (score difference, LSTM − LR, mean over seeds)."""
    lr = f"the LR ({lr_label})" if lr_label else "the LR"
    numbers = f"{diff:+.3f} [{lo:.3f}, {hi:.3f}]"
    return f"at {int(rows):,} rows {outcome_phrase(outcome(lo, hi, margin), lr, margin)}: {numbers}"


def paired_comparison(lstm_predictions: pd.DataFrame, lr_predictions: pd.DataFrame, *, n: int,
                      seed: int, alpha: float = 0.05, names: tuple[str, str] = ("lstm", "lr"),
                      margin: float = 0.0) -> dict[str, Any]:
    """LSTM − LR on the same test rows, one run each: replicated_comparison with one replicate."""
    return replicated_comparison([lstm_predictions], [lr_predictions], n=n, seed=seed,
                                 alpha=alpha, names=(names[0:1], names[1:2]), margin=margin)


def replicated_comparison(lstm_runs: list[pd.DataFrame], lr_runs: list[pd.DataFrame], *, n: int,
                          seed: int, alpha: float = 0.05,
                          names: tuple[list[str], list[str]] | None = None,
                          margin: float = 0.0) -> dict[str, Any]:
    """LSTM − LR on the same test rows with every replicate (seed) of each model:
    {n_test, score|accuracy|macro_f1: {diff (mean over seeds), lo, hi, se, df, half_width,
    seed_var_a, seed_var_b, test_var, share_a_better, a_runs, b_runs, a_sd, b_sd, detectable
    (metrics.detectable_difference at 80% power), outcome}} — metrics.seeded_bootstrap_diff: an
    interval for the mean over seeds (seed variance + paired test-row bootstrap, n resamples).
    Every frame (review_id, label, pred) must cover the same review_ids with the same labels."""
    names = names or ([f"lstm[{i}]" for i in range(len(lstm_runs))],
                      [f"lr[{i}]" for i in range(len(lr_runs))])
    frames = [_check_predictions(f, name) for f, name in
              zip(list(lstm_runs) + list(lr_runs), list(names[0]) + list(names[1]))]
    labels = [name for group in names for name in group]
    first = frames[0]
    for frame, name in zip(frames[1:], labels[1:]):
        _same_rows(first, frame, labels[0], name)
    aligned = [f.loc[first.index] for f in frames]
    k = len(lstm_runs)
    diffs = metrics.seeded_bootstrap_diff(
        first["label"].to_numpy(), [f["pred"].to_numpy() for f in aligned[:k]],
        [f["pred"].to_numpy() for f in aligned[k:]], n=n, seed=seed, alpha=alpha)
    return {"n_test": int(len(first)),
            **{m: {**d, "outcome": outcome(d["lo"], d["hi"], margin),
                   "detectable": metrics.detectable_difference(d["se"], d["df"], alpha)}
               for m, d in diffs.items()}}


def _same_rows(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> None:
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"predictions of {name_a} and {name_b} are not on the same test rows: "
            f"{len(a)} vs {len(b)} rows, {len(only_a)} only in {name_a} (e.g. "
            f"{list(only_a[:3])}), {len(only_b)} only in {name_b} (e.g. {list(only_b[:3])})")
    mismatch = a["label"].to_numpy() != b.loc[a.index, "label"].to_numpy()
    if mismatch.any():
        raise ValueError(f"predictions of {name_a} and {name_b} disagree on the true label "
                         f"of {int(mismatch.sum())} test rows (e.g. {list(a.index[mismatch][:3])})")


def _check_predictions(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in ("review_id", "label", "pred") if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions of {name}: missing columns {missing}")
    if frame.empty:
        raise ValueError(f"predictions of {name}: no rows")
    dup = frame["review_id"].duplicated()
    if dup.any():
        raise ValueError(f"predictions of {name}: review_id repeated "
                         f"(e.g. {list(frame.loc[dup, 'review_id'][:3])})")
    columns = ["label", "pred"] + (["proba"] if "proba" in frame.columns else [])
    return frame.set_index("review_id").sort_index()[columns]


def with_offsets(test: pd.DataFrame, validation: pd.DataFrame, name: str) -> tuple[pd.DataFrame, dict]:
    """Per-class decision offsets fitted on a run's validation predictions (metrics.fit_offsets)
    and applied to its test probabilities → (test frame with the offset pred, the fit)."""
    for frame, split in ((test, "test"), (validation, "validation")):
        if "proba" not in frame.columns or frame["proba"].isna().any():
            raise ValueError(f"predictions of {name} ({split}): no class probabilities, so no "
                             f"decision offsets")
    fitted = metrics.fit_offsets(validation["label"].to_numpy(),
                                 np.vstack(validation["proba"].to_numpy()))
    pred = metrics.offset_predictions(np.vstack(test["proba"].to_numpy()), fitted["offsets"])
    return test.assign(pred=pred), fitted


# --------------------------------------------------------------------------- runs → curves
def _num(value: Any) -> float | None:
    """A number from a results cell (ints, floats, numeric text); None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _value(row: Mapping[str, Any], column: str) -> Any:
    """A results cell; None when missing or NaN (a column other rows have)."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def truthy(value: Any) -> bool:
    """A results cell read as a flag: True, 1, "true", "1", "yes" (any case)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None else False


def lr_setting(row: Mapping[str, Any]) -> str:
    """A label of the LR's features: '4,000 TF-IDF features', 'hashed 1,048,576 TF-IDF
    features', or '' when the row does not say (e.g. from encode.tfidf_features/_hashed)."""
    features = _num(_value(row, FEATURES_COLUMN))
    hashed = truthy(_value(row, HASHED_COLUMN))
    if features is None:
        return "hashed TF-IDF" if hashed else ""
    return f"{'hashed ' if hashed else ''}{int(features):,} TF-IDF features"


def series_label(row: Mapping[str, Any]) -> str:
    """'LSTM', or 'LR (<engine>, <features>[, class_weight none])': each LR engine, feature
    setting and (un)weighting is its own series."""
    model = str(row.get("model") or "").lower()
    if model == "lstm":
        return "LSTM"
    if model == "lr":
        engine = row.get("engine")
        engine = engine if isinstance(engine, str) else ""
        # the study's LR is class-balanced; an unweighted LR is a different series
        unweighted = "class_weight none" if row.get("lr.class_weight") == "none" else ""
        parts = [p for p in (engine, lr_setting(row), unweighted) if p]
        return "LR" + (f" ({', '.join(parts)})" if parts else "")
    return str(row.get("model") or "?")


_FEATURE_SUFFIX = re.compile(r"_(top|hash)\d+$")
_REPLICATE_SUFFIX = re.compile(r"_r(\d+)$")


def sample_tag_of(row: Mapping[str, Any]) -> str:
    """The sample tag of a run (what sample manifests are keyed by): its sample_tag column, or
    for rows without one its tag less the TF-IDF suffix (an LR's tag is the encode tag)."""
    own = _value(row, SAMPLE_TAG_COLUMN)
    if own:
        return str(own)
    return _FEATURE_SUFFIX.sub("", str(row.get("tag") or ""))


def replicate_of(row: Mapping[str, Any]) -> int:
    """The seed replicate of a run: its replicate column, else the tag's _r<k> suffix, else 0."""
    own = _num(_value(row, REPLICATE_COLUMN))
    if own is not None:
        return int(own)
    found = _REPLICATE_SUFFIX.search(sample_tag_of(row))
    return int(found.group(1)) if found else 0


def cell_of(row: Mapping[str, Any]) -> str:
    """The grid cell of a run: its sample tag without the replicate suffix, plus an LSTM's
    width variant (lstm.variant, e.g. '_u128')."""
    variant = _value(row, "lstm.variant") if str(row.get("model")) == "lstm" else None
    return _REPLICATE_SUFFIX.sub("", sample_tag_of(row)) + (f"_{variant}" if variant else "")


def train_rows(row: Mapping[str, Any], full_rows: Mapping[str, int] | None = None) -> float:
    """Training rows of a run (the x of the learning curve): the ladder size sample_size; for
    'full', the sample manifest's rows_before of the run's sample tag (full_rows, keyed by
    sample tag for LR and LSTM rows alike) or a train-rows column of the row; NaN when unknown."""
    size = _num(row.get("sample_size"))
    if size is not None:
        return size
    tag = sample_tag_of(row)
    if full_rows and tag in full_rows and _num(full_rows[tag]) is not None:
        return float(full_rows[tag])
    counted = _num(_value(row, TRAIN_ROWS_COLUMN))
    return counted if counted is not None else float("nan")


def annotate(results: pd.DataFrame, full_rows: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The results table (all rows, same order) plus series, train_rows, cell, replicate,
    val_score (numeric), latest and in_curve.

    latest marks, per (series, tag), the last run (created_utc) of lr/lstm trainer rows with a
    test score: a rerun replaces an earlier one (evaluate rows never do). in_curve: the latest runs of replicate 0 (the grid
    itself; seed replicates only enter the verdict).
    """
    table = results.copy().reset_index(drop=True)
    if table.empty:
        return pd.DataFrame(columns=["run_id", "model", "series", "tag", "sample_method",
                                     "train_rows", "score", "val_score", "cell", "replicate",
                                     "latest", "in_curve"])
    for col in ("run_id", "model", "tag", "sample_method", "score", VAL_SCORE_COLUMN):
        if col not in table.columns:
            table[col] = None
    records = table.to_dict("records")
    table["series"] = [series_label(r) for r in records]
    table["train_rows"] = [train_rows(r, full_rows) for r in records]
    table["cell"] = [cell_of(r) for r in records]
    table["replicate"] = [replicate_of(r) for r in records]
    table["model"] = table["model"].fillna("").astype(str).str.lower()
    table["sample_method"] = table["sample_method"].fillna("?").astype(str)
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    table[VAL_SCORE_COLUMN] = pd.to_numeric(table[VAL_SCORE_COLUMN], errors="coerce")
    # an evaluate row re-scores a trained model on test only: the trainer's row (with its
    # validation score) stands for the run
    trainer = (table["stage"].astype("string") != "evaluate").fillna(True) \
        if "stage" in table.columns else True
    usable = table[table["model"].isin(["lr", "lstm"]) & table["score"].notna() & trainer]
    if "created_utc" in usable.columns:
        usable = usable.sort_values("created_utc", kind="stable")
    keep = usable.drop_duplicates(["series", "tag"], keep="last").index
    table["latest"] = table.index.isin(keep)
    table["in_curve"] = table["latest"] & (table["replicate"] == 0)
    return table


def curve_table(results: pd.DataFrame, full_rows: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The runs that form the curves (annotate()'s in_curve rows), with series and train_rows."""
    table = annotate(results, full_rows)
    return table[table["in_curve"]].reset_index(drop=True)


def curve_plateaus(curves: pd.DataFrame, min_gain: float) -> list[dict[str, Any]]:
    """plateau() of every (series, sample_method) curve with a known size for each point."""
    out = []
    known = curves[curves["train_rows"].notna()]
    for (series, method), group in known.groupby(["series", "sample_method"], sort=True):
        found = plateau(zip(group["train_rows"], group["score"]), min_gain)
        out.append({"series": series, "sample_method": method, **found})
    return out


# --------------------------------------------------------------------------- selection
def pick_best(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The selection rule, the one place it is written: per group of `by`, the run with the
    highest validation score (ties: the first sample_method in name order). Test scores are
    never read here; runs without a validation score cannot be selected. Sorted by `by`."""
    known = runs[runs[VAL_SCORE_COLUMN].notna()] if VAL_SCORE_COLUMN in runs else runs.iloc[0:0]
    if known.empty:
        return known.reset_index(drop=True)
    ordered = known.assign(_val=known[VAL_SCORE_COLUMN].astype(float),
                           _sampler=known["sample_method"].astype(str))
    ordered = ordered.sort_values([*by, "_val", "_sampler"],
                                  ascending=[True] * len(by) + [False, True], kind="stable")
    return (ordered.drop_duplicates(by, keep="first").drop(columns=["_val", "_sampler"])
            .reset_index(drop=True))


def select(curves: pd.DataFrame) -> pd.DataFrame:
    """The selected cell of every (series, train rows): pick_best among its samplers."""
    return pick_best(curves[curves["train_rows"].notna()], ["series", "train_rows"])


def replicate_runs(table: pd.DataFrame, series: str, cell: str) -> list[str]:
    """run_ids of every replicate of a cell (latest run of each), replicate 0 first."""
    runs = table[table["latest"] & (table["series"] == series) & (table["cell"] == cell)]
    return list(runs.sort_values("replicate", kind="stable")["run_id"])


def comparisons(table: pd.DataFrame) -> list[dict[str, Any]]:
    """For each LR series: the largest size where both the LSTM and that LR have a selected cell
    (chosen on validation), with every replicate run of both cells.

    table: annotate()'s output. Returns [{rows, lr_series, lr_label, lstm_cell, lr_cell,
    lstm_runs, lr_runs, lstm_run, lr_run (replicate 0), lstm_val_score, lr_val_score,
    lstm_sampler, lr_sampler}], one per LR series that shares a size with the LSTM.
    """
    chosen = select(table[table["in_curve"]])
    lstm = chosen[chosen["model"] == "lstm"]
    out = []
    if lstm.empty:
        return out
    for series, lr in chosen[chosen["model"] == "lr"].groupby("series", sort=True):
        shared = sorted(set(lstm["train_rows"]) & set(lr["train_rows"]))
        if not shared:
            continue
        rows = shared[-1]
        best_lstm = lstm[lstm["train_rows"] == rows].iloc[0]
        best_lr = lr[lr["train_rows"] == rows].iloc[0]
        label = series[len("LR ("):-1] if series.startswith("LR (") else ""
        out.append({"rows": int(rows), "lr_series": series, "lr_label": label,
                    "lstm_cell": best_lstm["cell"], "lr_cell": best_lr["cell"],
                    "lstm_sampler": best_lstm["sample_method"],
                    "lr_sampler": best_lr["sample_method"],
                    "lstm_runs": replicate_runs(table, "LSTM", best_lstm["cell"]),
                    "lr_runs": replicate_runs(table, series, best_lr["cell"]),
                    "lstm_run": best_lstm["run_id"], "lr_run": best_lr["run_id"],
                    "lstm_tag": best_lstm.get("tag"), "lr_tag": best_lr.get("tag"),
                    "lstm_val_score": float(best_lstm[VAL_SCORE_COLUMN]),
                    "lr_val_score": float(best_lr[VAL_SCORE_COLUMN]),
                    **comparator_flags(table, replicate_runs(table, series, best_lr["cell"]))})
    return out


def grid_edge(values: Iterable[float], chosen: float) -> bool:
    """Whether a value chosen from a grid of >= 3 distinct points is one of its ends (the
    optimum may lie outside the grid)."""
    ordered = sorted(set(float(v) for v in values))
    return len(ordered) >= 3 and float(chosen) in (ordered[0], ordered[-1])


def comparator_flags(table: pd.DataFrame, run_ids: list[str]) -> dict[str, Any]:
    """Whether an LR comparator can be trusted as fitted: {lr_converged (every replicate's
    chosen fit converged: results column 'converged'), lr_grid_edge (some replicate's chosen
    regParam is at an end of its lr.reg_grid: column 'lr_grid'), lr_reg_params}. None where
    the results rows do not say."""
    rows = table[table["run_id"].isin(run_ids)].to_dict("records")
    converged = [truthy(_value(r, "converged")) for r in rows if _value(r, "converged") is not None]
    edges, chosen = [], []
    for r in rows:
        raw = _value(r, "lr_grid")
        points = json.loads(raw) if isinstance(raw, str) and raw else (raw or [])
        picked = [p for p in points if p.get("selected")]
        if picked:
            chosen.append(picked[0].get("reg_param"))
            edges.append(grid_edge([p["reg_param"] for p in points], picked[0]["reg_param"]))
    return {"lr_converged": all(converged) if converged else None,
            "lr_grid_edge": any(edges) if edges else None,
            "lr_reg_params": sorted(set(c for c in chosen if c is not None))}


def decide(table: pd.DataFrame, load_predictions, *, n: int, seed: int, alpha: float = 0.05,
           margin: float = 0.0, decide_on: str = "raw") -> list[dict[str, Any]]:
    """comparisons() with their intervals (raw and with decision offsets) and sentence.

    load_predictions(run_id, split) → that run's predictions frame (review_id, label, pred,
    proba) of split 'test' or 'validation'. decide_on ('raw' | 'offsets') names the
    pre-registered basis of the sentence; the other is reported beside it (descriptive).
    Entries at the largest compared size are marked primary=True: primary_result() combines
    them.
    """
    if decide_on not in DECIDE_ON:
        raise ValueError(f"report.decide_on: {decide_on!r} is not one of {DECIDE_ON}")
    out = []
    for comp in comparisons(table):
        names = (comp["lstm_runs"], comp["lr_runs"])
        tests = [[load_predictions(r, "test") for r in group] for group in names]
        raw = replicated_comparison(tests[0], tests[1], n=n, seed=seed, alpha=alpha,
                                    names=names, margin=margin)
        offsets, fits, why = None, None, None
        try:
            shifted, fits = _offset_runs(tests, names, load_predictions)
            offsets = replicated_comparison(shifted[0], shifted[1], n=n, seed=seed,
                                            alpha=alpha, names=names, margin=margin)
        except ValueError as exc:
            why = str(exc)
        basis = raw if decide_on == "raw" or offsets is None else offsets
        s = basis["score"]
        out.append({**comp, **raw, "raw": raw, "offsets": offsets, "offset_fits": fits,
                    "offsets_unavailable": why,
                    "decided_on": "raw" if basis is raw else "offsets",
                    "margin": margin, "outcome": s["outcome"],
                    "sentence": verdict_sentence(comp["rows"], s["diff"], s["lo"], s["hi"],
                                                 comp["lr_label"] or None, margin)})
    if out:
        top = max(c["rows"] for c in out)
        for c in out:
            c["primary"] = c["rows"] == top
    return out


def primary_result(decided: list[dict[str, Any]], alpha: float = 0.05,
                   margin: float = 0.0) -> dict[str, Any] | None:
    """The answer to the mission's question: the LSTM against every LR setting selected on
    validation at the largest compared size, on the pre-registered basis's score. The LSTM
    beats the plateau only if it beats each setting, so the interval of LSTM − (best LR) is
    [min of the lower ends, min of the upper ends]: a claim that needs every comparison
    (better, not worse, equivalent) reads the lower ends at level 1 − alpha (intersection-union),
    a claim that one LR suffices for (worse, does not beat) reads upper ends widened to
    1 − alpha/k for k settings (Bonferroni). None without comparisons.

    Returns {rows, basis, lr_labels, diff (the smallest LSTM − LR), lo, hi, outcome, sentence,
    warnings (one line per comparator that did not converge or sits at its grid's edge)}.
    """
    members = [c for c in decided if c.get("primary")]
    if not members:
        return None
    k = len(members)
    numbers = [(c[c["decided_on"]] or c["raw"])["score"] for c in members]
    wide = [d["diff"] + metrics.t_quantile(1.0 - alpha / (2.0 * k), d["df"]) * d["se"]
            for d in numbers]
    lo, hi = min(d["lo"] for d in numbers), min(wide)
    diff = min(d["diff"] for d in numbers)
    found = outcome(lo, hi, margin)
    labels = [c["lr_label"] or c["lr_series"] for c in members]
    lr = "the LR" if k == 1 else "the best of these LR settings"
    basis = members[0]["decided_on"]
    sentence = (f"Primary result ({basis} score, mean over seeds; the LSTM against every LR "
                f"setting selected on validation: {'; '.join(labels)}): at "
                f"{int(members[0]['rows']):,} rows {outcome_phrase(found, lr, margin)}: "
                f"LSTM − best LR {diff:+.3f} [{lo:.3f}, {hi:.3f}]")
    warnings = []
    for c, label in zip(members, labels):
        problems = []
        if c.get("lr_converged") is False:
            problems.append("did not converge (lr.max_iter reached with the objective still "
                            "moving)")
        if c.get("lr_grid_edge"):
            problems.append("had its regularisation chosen at an edge of lr.reg_grid")
        if problems:
            warnings.append(f"Warning: the comparator LR ({label}) {' and '.join(problems)}; "
                            f"a better-fitted LR could score higher, so the primary result may "
                            f"favour the LSTM.")
    return {"rows": int(members[0]["rows"]), "basis": basis, "lr_labels": labels,
            "diff": diff, "lo": lo, "hi": hi, "outcome": found, "margin": margin,
            "sentence": sentence, "warnings": warnings}


def _offset_runs(tests, names, load_predictions):
    """Every run's test predictions after offsets fitted on its own validation predictions."""
    shifted, fits = [], []
    for group_tests, group_names in zip(tests, names):
        frames, group_fits = [], []
        for test, run_id in zip(group_tests, group_names):
            frame, fit = with_offsets(test, load_predictions(run_id, "validation"), run_id)
            frames.append(frame)
            group_fits.append({"run_id": run_id, **fit})
        shifted.append(frames)
        fits.append(group_fits)
    return shifted, {"lstm": fits[0], "lr": fits[1]}


def primary_sentences(primary: dict[str, Any] | None) -> list[str]:
    """The primary result's sentence and its warning lines ([] without comparisons)."""
    return [primary["sentence"], *primary["warnings"]] if primary else []


def jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars → Python, NaN → None), recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, default=str)
