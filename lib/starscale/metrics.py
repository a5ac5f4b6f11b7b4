"""The study's metrics on 5-class star predictions, with bootstrap intervals.

Labels are 0..4 (star − 1) everywhere. Confusion rows are the true class, columns the predicted one.

The study's ``eval_metric`` (``score``) is the harmonic mean of recall(1★), recall(2★),
recall(3★), recall(4★) and precision(5★): it rewards finding the rare low-star reviews without
letting the model dump everything into 5★. It is 0 when any component is 0 (or undefined).

Bootstrap: every metric here is a function of the confusion matrix only, and resampling n test
rows with replacement gives cell counts distributed exactly Multinomial(n, cell shares). So we
draw the resampled confusion matrices directly (np.random.Generator.multinomial) instead of
drawing n row indices per resample and bincounting them: the same distribution, but the cost per
resample is O(25) (O(125) for a paired comparison) instead of O(n), so 1M rows × 1000 resamples
takes milliseconds.
"""
from __future__ import annotations

from typing import Any

import numpy as np

N_CLASSES = 5
METRICS = ("score", "accuracy", "macro_f1")


def confusion(y_true, y_pred) -> np.ndarray:
    """5×5 int64 confusion matrix of labels 0..4 (rows true, columns predicted)."""
    y_true = _labels(y_true, "y_true")
    y_pred = _labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} rows but y_pred has {y_pred.size}")
    return np.bincount(y_true * N_CLASSES + y_pred,
                       minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)


def _labels(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of labels, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer)):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name}: labels must be integers 0..4")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise ValueError(f"{name}: labels must be in 0..4 (star - 1), got {arr.min()}..{arr.max()}")
    return arr


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _metrics_batch(conf: np.ndarray) -> dict[str, np.ndarray]:
    """score, accuracy and macro_f1 of a stack of confusion matrices, shape (..., 5, 5)."""
    conf = np.asarray(conf, dtype=np.float64)
    diag = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)           # row sums: true counts
    predicted = conf.sum(axis=-2)         # column sums: predicted counts
    total = support.sum(axis=-1)
    recall = _safe_div(diag, support)
    precision = _safe_div(diag, predicted)
    components = np.concatenate([recall[..., :4], precision[..., 4:5]], axis=-1)
    all_positive = np.all(components > 0, axis=-1)
    inv = np.divide(1.0, components, out=np.zeros_like(components), where=components > 0)
    score = np.where(all_positive, _safe_div(components.shape[-1], inv.sum(axis=-1)), 0.0)
    f1 = _safe_div(2.0 * diag, support + predicted)   # = 2PR/(P+R); 0 when tp = 0
    return {"score": score,
            "accuracy": _safe_div(diag.sum(axis=-1), total),
            "macro_f1": f1.mean(axis=-1)}


def score(confusion_matrix) -> float:
    """The study's eval_metric: harmonic mean of recall(1..4★) and precision(5★); 0 if any is 0."""
    conf = np.asarray(confusion_matrix)
    if conf.shape != (N_CLASSES, N_CLASSES):
        raise ValueError(f"confusion matrix must be 5x5, got shape {conf.shape}")
    return float(_metrics_batch(conf)["score"])


def summary_of_confusion(confusion_matrix) -> dict[str, float]:
    """score, accuracy and macro_f1 of a 5×5 confusion matrix (counts, or any positive
    multiple of them)."""
    conf = np.asarray(confusion_matrix, dtype=np.float64)
    if conf.shape != (N_CLASSES, N_CLASSES):
        raise ValueError(f"confusion matrix must be 5x5, got shape {conf.shape}")
    return {m: float(v) for m, v in _metrics_batch(conf).items()}


def summary(y_true, y_pred) -> dict[str, Any]:
    """score, accuracy, macro_f1 (mean over all 5 classes), per-class table and the confusion.

    per_class: list of {star, precision, recall, f1, support} for stars 1..5.
    """
    return summary_of_counts(confusion(y_true, y_pred))


def counts_matrix(confusion_matrix) -> np.ndarray:
    """A 5×5 matrix of non-negative integer counts (rows true, columns predicted) as int64, or
    a ValueError saying what is wrong with it."""
    conf = np.asarray(confusion_matrix)
    if conf.shape != (N_CLASSES, N_CLASSES):
        raise ValueError(f"confusion matrix must be 5x5, got shape {conf.shape}")
    if conf.size and (np.any(conf < 0) or not np.all(np.equal(np.mod(conf, 1), 0))):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    return conf.astype(np.int64)


def summary_of_counts(confusion_matrix) -> dict[str, Any]:
    """summary() of a 5×5 confusion matrix of counts, e.g. one aggregated by Spark (the rows
    never reach the driver): the same keys, n the matrix's total."""
    conf = counts_matrix(confusion_matrix)
    diag = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    precision = _safe_div(diag, predicted)
    recall = _safe_div(diag, support)
    f1 = _safe_div(2.0 * diag, support + predicted)
    batch = _metrics_batch(conf)
    return {
        "score": float(batch["score"]),
        "accuracy": float(batch["accuracy"]),
        "macro_f1": float(batch["macro_f1"]),
        "n": int(conf.sum()),
        "per_class": [{"star": k + 1, "precision": float(precision[k]), "recall": float(recall[k]),
                       "f1": float(f1[k]), "support": int(support[k])} for k in range(N_CLASSES)],
        "confusion": conf.tolist(),
    }


def _percentiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _check_boot(n: int, alpha: float) -> None:
    if int(n) < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _resampled_cells(cell_counts: np.ndarray, n: int, seed: int, chunk: int = 256):
    """Yield chunks of bootstrap cell-count vectors: shape (≤chunk, len(cell_counts))."""
    total = int(cell_counts.sum())
    if total == 0:
        raise ValueError("cannot bootstrap an empty test set")
    shares = cell_counts / total
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        yield rng.multinomial(total, shares, size=min(chunk, n - start))


def bootstrap_ci(y_true, y_pred, n: int, seed: int, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval over test rows: {score|accuracy|macro_f1: (lo, hi)}."""
    return bootstrap_ci_of_counts(confusion(y_true, y_pred), n, seed, alpha)


def bootstrap_ci_of_counts(confusion_matrix, n: int, seed: int,
                           alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """bootstrap_ci from the test rows' 5×5 confusion counts alone (the resampled matrices are
    drawn from its cells: module docstring), the same numbers for the same seed."""
    _check_boot(n, alpha)
    cells = counts_matrix(confusion_matrix).reshape(-1)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for counts in _resampled_cells(cells, int(n), seed):
        batch = _metrics_batch(counts.reshape(-1, N_CLASSES, N_CLASSES))
        for m in METRICS:
            draws[m].append(batch[m])
    return {m: _percentiles(np.concatenate(draws[m]), alpha) for m in METRICS}


def paired_bootstrap_diff(y_true, pred_a, pred_b, n: int, seed: int,
                          alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Metric(A) − metric(B) on the same test rows, resampled together (a paired bootstrap).

    Returns {metric: {"diff": point difference, "lo", "hi": diff ± z·(bootstrap standard
    deviation), "share_a_better": share of resamples with diff > 0}}. An interval that excludes
    0 means the difference is not explained by which test rows happened to be drawn. One run
    per model: seeded_bootstrap_diff with one seed each.
    """
    out = seeded_bootstrap_diff(y_true, [pred_a], [pred_b], n, seed, alpha)
    return {m: {k: v for k, v in d.items() if k in ("diff", "lo", "hi", "share_a_better")}
            for m, d in out.items()}


def seeded_bootstrap_diff(y_true, preds_a: list, preds_b: list, n: int, seed: int,
                          alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Metric(A) − metric(B) averaged over each model's seed replicates, with an interval for
    that mean (what the point estimate claims).

    Two sources of noise are combined (module docstring of mean_diff_interval): each model's
    seed-to-seed variance of its replicates' scores (s²/k, k replicates) and the test rows'
    variance of the difference of the two means, from a paired bootstrap of the test rows
    (every replicate of both models scored on the same resampled rows; n resamples). The
    interval is diff ± t·se with Welch–Satterthwaite degrees of freedom. With one replicate
    each it is a paired-bootstrap normal interval.

    Returns {metric: {diff, lo, hi, se, df, half_width, seed_var_a, seed_var_b, test_var,
    share_a_better (share of resamples with a positive difference of means), a_runs, b_runs
    (per-replicate points), a_sd, b_sd (their standard deviations; 0 for one replicate)}}.
    """
    _check_boot(n, alpha)
    y_true = _labels(y_true, "y_true")
    preds_a = [_labels(p, f"preds_a[{i}]") for i, p in enumerate(preds_a)]
    preds_b = [_labels(p, f"preds_b[{i}]") for i, p in enumerate(preds_b)]
    if not preds_a or not preds_b:
        raise ValueError("seeded_bootstrap_diff: need at least one replicate of each model")
    for p in preds_a + preds_b:
        if p.shape != y_true.shape:
            raise ValueError(f"row counts differ: y_true {y_true.size}, a prediction {p.size}")
    points_a = [_metrics_batch(confusion(y_true, a)) for a in preds_a]
    points_b = [_metrics_batch(confusion(y_true, b)) for b in preds_b]
    boot = bootstrap_of_means(y_true, preds_a, preds_b, n, seed)
    out = {}
    for m in METRICS:
        a_runs = [float(p[m]) for p in points_a]
        b_runs = [float(p[m]) for p in points_b]
        interval = mean_diff_interval(a_runs, b_runs, float(np.var(boot[m], ddof=1))
                                      if len(boot[m]) > 1 else 0.0, alpha)
        out[m] = {**interval, "share_a_better": float(np.mean(boot[m] > 0)),
                  "a_runs": a_runs, "b_runs": b_runs,
                  "a_sd": float(np.std(a_runs, ddof=1)) if len(a_runs) > 1 else 0.0,
                  "b_sd": float(np.std(b_runs, ddof=1)) if len(b_runs) > 1 else 0.0}
    return out


def bootstrap_of_means(y_true, preds_a: list, preds_b: list, n: int, seed: int,
                            chunk: int = 256) -> dict[str, np.ndarray]:
    """Paired bootstrap of the test rows: {metric: n draws of mean_i metric(A_i) −
    mean_j metric(B_j)}, every replicate scored on the same resampled rows.

    Rows with the same (label, every prediction) are interchangeable, so the resample draws
    counts of the distinct patterns from their multinomial (as _resampled_cells) and each
    replicate's confusion matrix is those counts times the pattern → cell map."""
    k = N_CLASSES
    y_true = np.asarray(y_true, dtype=np.int64)
    stacked = np.column_stack([y_true, *preds_a, *preds_b])
    patterns, counts = np.unique(stacked, axis=0, return_counts=True)
    maps = []
    for r in range(1, stacked.shape[1]):
        onehot = np.zeros((len(patterns), k * k))
        onehot[np.arange(len(patterns)), patterns[:, 0] * k + patterns[:, r]] = 1.0
        maps.append(onehot)
    n_a = len(preds_a)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for resampled in _resampled_cells(counts.astype(np.int64), int(n), seed, chunk):
        per_run = [_metrics_batch((resampled @ onehot).reshape(-1, k, k)) for onehot in maps]
        for m in METRICS:
            mean_a = np.mean([p[m] for p in per_run[:n_a]], axis=0)
            mean_b = np.mean([p[m] for p in per_run[n_a:]], axis=0)
            draws[m].append(mean_a - mean_b)
    return {m: np.concatenate(draws[m]) for m in METRICS}


def welch_df(parts: list[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variance estimates, each given as
    (variance, its degrees of freedom; math.inf for one known from a large bootstrap):
    (Σ v)² / Σ v²/df. inf when every finite-df part is 0."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if np.isfinite(df) and df > 0 and v > 0)
    if total <= 0 or denom <= 0:
        return float("inf")
    return float(total * total / denom)


def t_quantile(q: float, df: float) -> float:
    """The q quantile of Student's t with df degrees of freedom (the normal one for df = inf)."""
    from scipy import stats
    return float(stats.norm.ppf(q) if not np.isfinite(df) else stats.t.ppf(q, df))


def mean_diff_interval(a_runs: list[float], b_runs: list[float], test_var: float,
                       alpha: float = 0.05) -> dict[str, float]:
    """Interval for mean(a_runs) − mean(b_runs) when each run is one seed of its model scored
    on the same test rows: variance s_a²/k_a + s_b²/k_b (seed noise; 0 for one run) +
    test_var (the test rows' variance of the difference of means, from the paired bootstrap),
    t quantile with Welch–Satterthwaite degrees of freedom (the bootstrap part counts as known:
    infinite df). Returns {diff, lo, hi, se, df, half_width, seed_var_a, seed_var_b,
    test_var}."""
    if not a_runs or not b_runs:
        raise ValueError("mean_diff_interval: need at least one run of each model")
    if not test_var >= 0:
        raise ValueError(f"mean_diff_interval: test_var must be >= 0, got {test_var}")
    ka, kb = len(a_runs), len(b_runs)
    var_a = float(np.var(a_runs, ddof=1)) / ka if ka > 1 else 0.0
    var_b = float(np.var(b_runs, ddof=1)) / kb if kb > 1 else 0.0
    df = welch_df([(var_a, ka - 1), (var_b, kb - 1), (float(test_var), float("inf"))])
    se = float(np.sqrt(var_a + var_b + test_var))
    half = t_quantile(1.0 - alpha / 2.0, df) * se
    diff = float(np.mean(a_runs) - np.mean(b_runs))
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "se": se, "df": df,
            "half_width": half, "seed_var_a": var_a, "seed_var_b": var_b,
            "test_var": float(test_var)}


def detectable_difference(se: float, df: float, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at alpha detects with the given power,
    for an estimate with standard error se and df degrees of freedom:
    (t_{1−α/2} + t_{power}) · se."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return (t_quantile(1.0 - alpha / 2.0, df) + t_quantile(power, df)) * float(se)


def seeds_for_half_width(sd: float, runs: int, half_width: float, cap: int,
                         alpha: float = 0.05) -> int:
    """The seed top-up rule: k = ⌈(t·ŝ/h)²⌉ replicates so that the seed part of a mean's
    interval, t·ŝ/√k, is at most h — t the 1 − α/2 quantile with runs − 1 degrees of freedom
    (the runs that estimated ŝ), clipped to [runs, cap]."""
    if runs < 2:
        raise ValueError(f"seeds_for_half_width: need >= 2 runs to estimate a spread, got {runs}")
    if not half_width > 0:
        raise ValueError(f"seeds_for_half_width: target half-width must be > 0, got {half_width}")
    need = int(np.ceil((t_quantile(1.0 - alpha / 2.0, runs - 1) * float(sd) / half_width) ** 2))
    return int(min(max(need, runs), max(cap, runs)))


# --------------------------------------------------------------------------- decision offsets
OFFSET_GRID = tuple(np.round(np.linspace(-2.0, 2.0, 41), 2))


def offset_predictions(proba, offsets) -> np.ndarray:
    """argmax over classes of log(proba) + offsets: the prediction after per-class offsets."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise ValueError(f"proba must be (n, {N_CLASSES}), got shape {proba.shape}")
    logp = np.log(np.clip(proba, 1e-12, None))
    return (logp + np.asarray(offsets, dtype=np.float64)).argmax(axis=1).astype(np.int64)


def fit_offsets(y_true, proba, *, grid=OFFSET_GRID, rounds: int = 3, max_rows: int = 200_000,
                seed: int = 0) -> dict[str, Any]:
    """Per-class additive offsets on log-probabilities that maximise the study's score on the
    rows given (the validation split; never the test split).

    Coordinate ascent: each round tries every grid value for each class in turn (class 1★
    first) and keeps a change only when it raises the score; ties keep the offset nearest 0.
    At most max_rows rows are used (a seeded random subset). Returns {offsets (5 floats, the
    5★ offset fixed at 0: only differences between classes matter), score_before, score_after,
    rows}.
    """
    y_true = _labels(y_true, "y_true")
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (y_true.size, N_CLASSES):
        raise ValueError(f"fit_offsets: proba shape {proba.shape} does not match "
                         f"{y_true.size} labels")
    if y_true.size > max_rows:
        keep = np.random.default_rng(seed).choice(y_true.size, max_rows, replace=False)
        y_true, proba = y_true[keep], proba[keep]
    logp = np.log(np.clip(proba, 1e-12, None))

    def score_of(offsets: np.ndarray) -> float:
        pred = (logp + offsets).argmax(axis=1)
        conf = np.bincount(y_true * N_CLASSES + pred, minlength=N_CLASSES ** 2)
        return float(_metrics_batch(conf.reshape(N_CLASSES, N_CLASSES))["score"])

    offsets = np.zeros(N_CLASSES)
    before = best = score_of(offsets)
    for _ in range(int(rounds)):
        improved = False
        for cls in range(N_CLASSES - 1):
            for value in sorted(grid, key=abs):
                trial = offsets.copy()
                trial[cls] = value
                s = score_of(trial)
                if s > best + 1e-12:
                    best, offsets, improved = s, trial, True
        if not improved:
            break
    return {"offsets": [float(o) for o in offsets], "score_before": before,
            "score_after": best, "rows": int(y_true.size)}


def metric_columns(summary_: dict[str, Any], ci: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Flat results-table columns from summary() (+ bootstrap_ci()): score, score_lo, ...,
    recall_1..5, precision_1..5, f1_1..5, support_1..5, n_test, confusion (5×5 list)."""
    row: dict[str, Any] = {m: summary_[m] for m in METRICS}
    for m in METRICS:
        lo, hi = (ci or {}).get(m, (None, None))
        row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
    for cls in summary_["per_class"]:
        for key in ("precision", "recall", "f1", "support"):
            row[f"{key}_{cls['star']}"] = cls[key]
    row["n_test"] = summary_.get("n")
    row["confusion"] = summary_["confusion"]     # the results table stores it as JSON text
    return row
