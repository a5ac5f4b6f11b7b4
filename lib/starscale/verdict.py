"""The answer to the study's question: plateau detection and the paired LSTM − LR verdict.

Everything here is a pure function of the results table (``starscale.results``), saved test
predictions and plain values; the report stage does the reading and writing.

- ``plateau``: on a learning curve of (train rows, score) points, the gain per doubling of each
  segment between consecutive points is ``Δscore / log2(rows_b / rows_a)``; the curve has
  plateaued at the smallest size after which *every* segment gains less than ``min_gain``.
- ``paired_comparison``: LSTM minus LR on the same test rows (joined by review_id), with a
  paired bootstrap interval for score, accuracy and macro F1 (``metrics.paired_bootstrap_diff``).
- ``verdict_sentence``: "the LSTM beats / does not beat / ties the LR at N rows: +0.0xx [a, b]".
- ``curve_table`` / ``comparisons``: which runs form the curves and which pair is compared.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from starscale import metrics

# The earlier single-machine study's scores (harmonic-mean metric), drawn on the learning curve.
STUDY_POINTS: tuple[dict[str, Any], ...] = (
    {"model": "lr", "rows": 50_000, "score": 0.4656, "label": "study LR 0.4656 @ 50k"},
    {"model": "lr", "rows": 8_000_000, "score": 0.5175, "label": "study LR 0.5175 @ 8M (plateau)"},
    {"model": "lstm", "rows": 200_000, "score": 0.334, "label": "study LSTM 0.334 @ 200k"},
)

# Results columns read here (results.ResultRow: every trainer writes them): the training rows
# of a run (used only when its sample_size is 'full' and no sample manifest says how many rows
# that was) and the LR's feature setting (the encode section of its params).
TRAIN_ROWS_COLUMN = "train_rows"
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
def outcome(lo: float, hi: float) -> str:
    """'beats' when the interval is above 0, 'does not beat' when below 0, else 'ties'."""
    if lo > 0:
        return "beats"
    if hi < 0:
        return "does not beat"
    return "ties"


def verdict_sentence(rows: int, diff: float, lo: float, hi: float,
                     lr_label: str | None = None) -> str:
    """'the LSTM beats the LR (…) at 200,000 rows: +0.052 [0.031, 0.070]' (score difference)."""
    lr = f"the LR ({lr_label})" if lr_label else "the LR"
    return (f"the LSTM {outcome(lo, hi)} {lr} at {int(rows):,} rows: "
            f"{diff:+.3f} [{lo:.3f}, {hi:.3f}]")


def paired_comparison(lstm_predictions: pd.DataFrame, lr_predictions: pd.DataFrame, *, n: int,
                      seed: int, alpha: float = 0.05, names: tuple[str, str] = ("lstm", "lr")
                      ) -> dict[str, Any]:
    """LSTM − LR on the same test rows: {n_test, score|accuracy|macro_f1: {diff, lo, hi,
    share_a_better, outcome}}. Predictions are frames with review_id, label, pred; they must
    cover exactly the same review_ids with the same labels (else ValueError)."""
    a = _check_predictions(lstm_predictions, names[0])
    b = _check_predictions(lr_predictions, names[1])
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"predictions of {names[0]} and {names[1]} are not on the same test rows: "
            f"{len(a)} vs {len(b)} rows, {len(only_a)} only in {names[0]} (e.g. "
            f"{list(only_a[:3])}), {len(only_b)} only in {names[1]} (e.g. {list(only_b[:3])})")
    b = b.loc[a.index]
    mismatch = a["label"].to_numpy() != b["label"].to_numpy()
    if mismatch.any():
        raise ValueError(f"predictions of {names[0]} and {names[1]} disagree on the true label "
                         f"of {int(mismatch.sum())} test rows (e.g. {list(a.index[mismatch][:3])})")
    diffs = metrics.paired_bootstrap_diff(a["label"].to_numpy(), a["pred"].to_numpy(),
                                          b["pred"].to_numpy(), n=n, seed=seed, alpha=alpha)
    return {"n_test": int(len(a)),
            **{m: {**d, "outcome": outcome(d["lo"], d["hi"])} for m, d in diffs.items()}}


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
    return frame.set_index("review_id").sort_index()[["label", "pred"]]


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


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None else False


def lr_setting(row: Mapping[str, Any]) -> str:
    """A label of the LR's features: '4,000 TF-IDF features', 'hashed 1,048,576 TF-IDF
    features', or '' when the row does not say (e.g. from encode.tfidf_features/_hashed)."""
    features = _num(_value(row, FEATURES_COLUMN))
    hashed = _truthy(_value(row, HASHED_COLUMN))
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


def train_rows(row: Mapping[str, Any], full_rows: Mapping[str, int] | None = None) -> float:
    """Training rows of a run (the x of the learning curve): the ladder size sample_size; for
    'full', the sample manifest's rows_before of the run's tag (full_rows) or a train-rows
    column of the row; NaN when unknown."""
    size = _num(row.get("sample_size"))
    if size is not None:
        return size
    tag = row.get("tag")
    if full_rows and tag in full_rows and _num(full_rows[tag]) is not None:
        return float(full_rows[tag])
    counted = _num(_value(row, TRAIN_ROWS_COLUMN))
    return counted if counted is not None else float("nan")


def annotate(results: pd.DataFrame, full_rows: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The results table (all rows, same order) plus series, train_rows and in_curve.

    in_curve marks the runs that form the curves and the verdict: lr/lstm rows with a score, one
    per (series, tag), the latest (created_utc) when a run was repeated.
    """
    table = results.copy().reset_index(drop=True)
    if table.empty:
        return pd.DataFrame(columns=["run_id", "model", "series", "tag", "sample_method",
                                     "train_rows", "score", "in_curve"])
    for col in ("run_id", "model", "tag", "sample_method", "score"):
        if col not in table.columns:
            table[col] = None
    records = table.to_dict("records")
    table["series"] = [series_label(r) for r in records]
    table["train_rows"] = [train_rows(r, full_rows) for r in records]
    table["model"] = table["model"].fillna("").astype(str).str.lower()
    table["sample_method"] = table["sample_method"].fillna("?").astype(str)
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    usable = table[table["model"].isin(["lr", "lstm"]) & table["score"].notna()]
    if "created_utc" in usable.columns:
        usable = usable.sort_values("created_utc", kind="stable")
    keep = usable.drop_duplicates(["series", "tag"], keep="last").index
    table["in_curve"] = table.index.isin(keep)
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


def comparisons(curves: pd.DataFrame) -> list[dict[str, Any]]:
    """For each LR series: the largest size with runs of both the LSTM and that LR, and the best
    run (highest score, any sampler) of each model at that size.

    Returns [{rows, lstm_run, lr_run, lr_series, lr_label, lstm_score, lr_score}], one per LR
    series that shares a size with the LSTM.
    """
    known = curves[curves["train_rows"].notna()]
    lstm = known[known["model"] == "lstm"]
    out = []
    if lstm.empty:
        return out
    for series, lr in known[known["model"] == "lr"].groupby("series", sort=True):
        shared = sorted(set(lstm["train_rows"]) & set(lr["train_rows"]))
        if not shared:
            continue
        rows = shared[-1]
        best_lstm = lstm[lstm["train_rows"] == rows].sort_values("score", kind="stable").iloc[-1]
        best_lr = lr[lr["train_rows"] == rows].sort_values("score", kind="stable").iloc[-1]
        label = series[len("LR ("):-1] if series.startswith("LR (") else ""
        out.append({"rows": int(rows), "lr_series": series, "lr_label": label,
                    "lstm_run": best_lstm["run_id"], "lr_run": best_lr["run_id"],
                    "lstm_tag": best_lstm.get("tag"), "lr_tag": best_lr.get("tag"),
                    "lstm_score": float(best_lstm["score"]), "lr_score": float(best_lr["score"])})
    return out


def decide(curves: pd.DataFrame, load_predictions, *, n: int, seed: int,
           alpha: float = 0.05) -> list[dict[str, Any]]:
    """comparisons() with their paired bootstrap and verdict sentence.

    load_predictions(run_id) → that run's predictions frame (review_id, label, pred).
    """
    out = []
    for comp in comparisons(curves):
        paired = paired_comparison(load_predictions(comp["lstm_run"]),
                                   load_predictions(comp["lr_run"]), n=n, seed=seed, alpha=alpha,
                                   names=(comp["lstm_run"], comp["lr_run"]))
        s = paired["score"]
        out.append({**comp, **paired,
                    "sentence": verdict_sentence(comp["rows"], s["diff"], s["lo"], s["hi"],
                                                 comp["lr_label"] or None)})
    return out


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
