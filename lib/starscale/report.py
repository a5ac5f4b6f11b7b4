"""The static report: learning curves, sampler comparison, best models, data and run facts.

``build_report`` is a pure function of the results table, a predictions loader, the stages'
manifests (JSON dicts) and plain values; it returns the report's files as bytes (``index.html``,
``report.md``, PNG plots, ``verdict.json``) and the verdict. It never fits or scores a model: the
numbers come from the results rows; saved predictions are read only for the paired bootstrap of
the verdict and for a confusion matrix a row does not carry.

The page is a list of blocks (heading, paragraph, table, image, list, code) that two Jinja2
templates shipped in the package render: ``templates/report.html.j2`` (autoescaped, inline CSS)
and ``templates/report.md.j2``. Every table is so rendered twice from the same cells — HTML
(``<table id="...">``) and markdown (preceded by ``<!-- table: id -->``) — and either can be
parsed back. Plots are drawn with matplotlib's Agg backend (``Figure`` objects, no pyplot state)
and referenced by relative name, so the folder reads offline with no server, CSS or JavaScript
from elsewhere.
"""
from __future__ import annotations

import functools
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jinja2
import numpy as np
import pandas as pd

from starscale import metrics, verdict

METRIC_LABELS = {"score": "score (harmonic mean R1..R4, P5)", "accuracy": "accuracy",
                 "macro_f1": "macro F1"}
RESULT_COLUMNS = ("run_id", "model", "engine", "series", "tag", "sample_size", "sample_method",
                  "replicate", "train_rows", "val_score", "score", "score_lo", "score_hi", "accuracy", "accuracy_lo",
                  "accuracy_hi", "macro_f1", "macro_f1_lo", "macro_f1_hi", "n_test", "in_curve")
# Timing and throughput columns of a results row: undotted names (dotted ones are config).
TIMING_PATTERN = re.compile(r"(seconds|_secs?$|_s$|throughput|per_s|per_sec|rows_per|samples_per"
                            r"|epochs_run|rows_seen|time)", re.IGNORECASE)
MANIFEST_SKIP = ("config", "inputs", "versions", "output", "complete")
SAMPLERS = ("none", "random_under", "random_over", "class_weight", "adasyn")
STARS = (1, 2, 3, 4, 5)
PLOT_DPI = 110
INDEX_HTML = "index.html"
REPORT_MD = "report.md"


@dataclass
class Table:
    """One report table: id (HTML id / markdown marker), column names and raw cell values."""
    id: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Report:
    files: dict[str, bytes]
    verdicts: list[dict[str, Any]]
    plateaus: list[dict[str, Any]]
    tables: dict[str, Table] = field(default_factory=dict)
    primary: dict[str, Any] | None = None

    @property
    def sentences(self) -> list[str]:
        """The primary result and its warnings, then one sentence per LR setting."""
        return verdict.primary_sentences(self.primary) + [v["sentence"] for v in self.verdicts]


# --------------------------------------------------------------------------- cells
def fmt(value: Any) -> str:
    """One cell as text: '' for missing, 4 decimals for fractional numbers (3 significant
    digits in scientific notation below 0.001), ints as digits."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) >= 1000:
            return str(int(value))
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"        # e.g. regParam 1e-06 (4 decimals would print 0.0000)
        return f"{value:.4f}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


FRACTION_COLUMN = re.compile(r"^((score|accuracy|macro_f1)(_lo|_hi)?|(precision|recall|f1)(_\d)?"
                             r"|diff|lo|hi)$")


def _frame_table(table_id: str, frame: pd.DataFrame, columns: list[str]) -> Table:
    """Table of frame's columns (those present); counts that pandas made float (a column with
    missing cells) are shown as integers again, metrics always with 4 decimals."""
    cols = [c for c in columns if c in frame.columns]
    rows = [[_plain(v) for v in rec] for rec in frame[cols].itertuples(index=False, name=None)]
    for j, col in enumerate(cols):
        values = [r[j] for r in rows if isinstance(r[j], float) and not math.isnan(r[j])]
        if (values and not FRACTION_COLUMN.match(col) and all(v.is_integer() for v in values)
                and all(isinstance(r[j], float) or r[j] is None for r in rows)):
            for r in rows:
                r[j] = None if r[j] is None or math.isnan(r[j]) else int(r[j])
    return Table(table_id, cols, rows)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    from matplotlib.figure import Figure      # Agg canvas; no pyplot global state
    return Figure(figsize=(width, height), layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI)
    return buf.getvalue()


def _note(fig, text: str) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


def _yerr(frame: pd.DataFrame, metric: str) -> np.ndarray | None:
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if lo not in frame.columns or hi not in frame.columns:
        return None
    mid = frame[metric].to_numpy(dtype=float)
    low = pd.to_numeric(frame[lo], errors="coerce").to_numpy(dtype=float)
    high = pd.to_numeric(frame[hi], errors="coerce").to_numpy(dtype=float)
    if np.all(np.isnan(low)) and np.all(np.isnan(high)):
        return None
    return np.vstack([np.nan_to_num(mid - low), np.nan_to_num(high - mid)]).clip(min=0)


def _series_colors(names) -> dict[str, Any]:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    ordered = sorted(set(names), key=lambda s: (s != "LSTM", s))
    return {name: cmap(i % 10) for i, name in enumerate(ordered)}


LINESTYLES = {"none": "-", "random_under": "--", "random_over": "-.", "class_weight": ":",
              "adasyn": (0, (5, 1, 1, 1))}


def learning_curves_png(curves: pd.DataFrame, plateaus: list[dict], include_study: bool) -> bytes:
    known = curves[curves["train_rows"].notna()] if not curves.empty else curves
    fig = _figure(15, 5.6)
    if known.empty:
        _note(fig, "no runs with a known training size yet")
        return _png(fig)
    colors = _series_colors(known["series"])
    axes = fig.subplots(1, 3, sharex=True)
    for ax, metric in zip(axes, metrics.METRICS):
        if metric not in known.columns:
            ax.set_title(f"{METRIC_LABELS[metric]}: not in the results")
            continue
        for (series, method), group in known.groupby(["series", "sample_method"], sort=True):
            group = group.sort_values("train_rows")
            values = pd.to_numeric(group[metric], errors="coerce")
            err = _yerr(group.assign(**{metric: values}), metric)
            ax.errorbar(group["train_rows"], values, yerr=err,
                        color=colors[series], linestyle=LINESTYLES.get(method, "-"), marker="o",
                        capsize=3, label=f"{series} / {method}")
        for found in plateaus:
            if found["plateau_rows"] is not None:
                ax.axvline(found["plateau_rows"], color=colors.get(found["series"], "grey"),
                           linestyle=(0, (2, 2)), linewidth=1.2, alpha=0.8,
                           label=(f"plateau {found['series']} / {found['sample_method']} @ "
                                  f"{found['plateau_rows']:,}") if metric == "score" else None)
        if metric == "score" and include_study:
            for point in verdict.STUDY_POINTS:
                ax.scatter([point["rows"]], [point["score"]], marker="*", s=160, color="black",
                           zorder=5)
                ax.annotate(point["label"], (point["rows"], point["score"]),
                            textcoords="offset points", xytext=(0, 9), ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("training rows (log scale)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(METRIC_LABELS[metric])
        ax.grid(True, which="both", alpha=0.3)
    xs = list(known["train_rows"]) + ([p["rows"] for p in verdict.STUDY_POINTS]
                                      if include_study else [])
    axes[0].set_xlim(min(xs) / 1.6, max(xs) * 1.6)   # room for the markers' labels
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               fontsize=8)
    return _png(fig)


def sampling_png(at_size: pd.DataFrame, size_label: str) -> bytes:
    fig = _figure(15, 4.5)
    if at_size.empty:
        _note(fig, "no runs for a sampler comparison yet")
        return _png(fig)
    methods = [m for m in SAMPLERS if m in set(at_size["sample_method"])]
    methods += sorted(set(at_size["sample_method"]) - set(methods))
    series_names = sorted(set(at_size["series"]), key=lambda s: (s != "LSTM", s))
    colors = _series_colors(series_names)
    width = 0.8 / max(len(series_names), 1)
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, metrics.METRICS):
        for i, series in enumerate(series_names):
            group = (at_size[at_size["series"] == series].set_index("sample_method")
                     .reindex(methods))
            values = pd.to_numeric(group[metric], errors="coerce") if metric in group else None
            if values is None:
                continue
            x = np.arange(len(methods)) + (i - (len(series_names) - 1) / 2) * width
            err = _yerr(group.assign(**{metric: values}), metric)
            ax.bar(x, values.fillna(0).to_numpy(), width=width, yerr=err, capsize=3,
                   color=colors[series], label=series)
        ax.set_xticks(np.arange(len(methods)), methods, rotation=20)
        ax.set_title(f"{METRIC_LABELS[metric]} at {size_label} rows")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return _png(fig)


def confusion_png(conf: np.ndarray, title: str) -> bytes:
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    conf = np.asarray(conf, dtype=float)
    shares = np.divide(conf, conf.sum(axis=1, keepdims=True),
                       out=np.zeros_like(conf), where=conf.sum(axis=1, keepdims=True) > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{int(conf[i, j])}\n{shares[i, j]:.2f}", ha="center", va="center",
                    fontsize=7, color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(5), [f"{s}★" for s in STARS])
    ax.set_yticks(range(5), [f"{s}★" for s in STARS])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row share = recall)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def per_class_png(per_class: pd.DataFrame, title: str) -> bytes:
    fig = _figure(6.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(per_class))
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, per_class[key].to_numpy(dtype=float), width=0.27, label=key)
    ax.set_xticks(x, [f"{s}★" for s in per_class["star"]])
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def class_distribution_png(counts: pd.DataFrame) -> bytes:
    tags = list(dict.fromkeys(counts["tag"])) if not counts.empty else []
    fig = _figure(max(4.0 * len(tags), 5), 3.8)
    if not tags:
        _note(fig, "no sample manifests found")
        return _png(fig)
    axes = np.atleast_1d(fig.subplots(1, len(tags)))
    for ax, tag in zip(axes, tags):
        group = counts[counts["tag"] == tag].sort_values("star")
        x = np.arange(len(group))
        ax.bar(x - 0.2, group["before"].fillna(0).to_numpy(dtype=float), width=0.4, label="before")
        ax.bar(x + 0.2, group["after"].fillna(0).to_numpy(dtype=float), width=0.4, label="after")
        ax.set_xticks(x, [f"{s}★" for s in group["star"]])
        ax.set_title(tag, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("train rows")
    return _png(fig)


# --------------------------------------------------------------------------- pieces
def full_rows_from_manifests(manifests: Mapping[str, dict]) -> dict[str, int]:
    """{tag: rows_before} of every sample manifest (the size of the 'full' ladder cell)."""
    out = {}
    for key, manifest in manifests.items():
        if key.startswith("sample/") and isinstance(manifest.get("rows_before"), (int, float)):
            out[key.split("/", 1)[1]] = int(manifest["rows_before"])
    return out


def sampling_size(curves: pd.DataFrame, wanted: int | str | None) -> Any:
    """The sample_size shown in the sampler comparison: wanted, else the one with most samplers
    (ties: the largest training size)."""
    if curves.empty or "sample_size" not in curves.columns:
        return None
    sizes = curves["sample_size"].astype(str)
    if wanted is not None:
        return str(wanted)
    counts = (curves.assign(_size=sizes).groupby("_size")
              .agg(methods=("sample_method", "nunique"), rows=("train_rows", "max")))
    counts = counts.sort_values(["methods", "rows"], na_position="first")
    return counts.index[-1]


def _confusion_of(row: Mapping[str, Any], load_predictions) -> np.ndarray | None:
    raw = row.get("confusion")
    if isinstance(raw, str) and raw:
        conf = np.asarray(json.loads(raw))
        if conf.shape == (5, 5):
            return conf
    if isinstance(raw, (list, np.ndarray)) and np.asarray(raw).shape == (5, 5):
        return np.asarray(raw)
    try:
        preds = load_predictions(row["run_id"])
    except ValueError:
        return None
    return metrics.confusion(preds["label"].to_numpy(), preds["pred"].to_numpy())


def _per_class_of(row: Mapping[str, Any], conf: np.ndarray | None) -> pd.DataFrame | None:
    keys = ("precision", "recall", "f1", "support")
    if all(f"{k}_{s}" in row and pd.notna(row[f"{k}_{s}"]) for k in keys[:3] for s in STARS):
        return pd.DataFrame([{"star": s, **{k: row.get(f"{k}_{s}") for k in keys}}
                             for s in STARS])
    if conf is None:
        return None
    labels, preds = np.nonzero(conf)          # rebuild label/pred pairs from the counts
    counts = conf[labels, preds]
    summary = metrics.summary(np.repeat(labels, counts), np.repeat(preds, counts))
    return pd.DataFrame(summary["per_class"])[["star", *keys]]


def class_counts_table(manifests: Mapping[str, dict]) -> pd.DataFrame:
    rows = []
    for key in sorted(manifests):
        if not key.startswith("sample/"):
            continue
        manifest = manifests[key]
        before = manifest.get("class_counts_before") or {}
        after = manifest.get("class_counts_after") or {}
        for star in STARS:
            rows.append({"tag": key.split("/", 1)[1], "size": manifest.get("size"),
                         "method": manifest.get("method"), "star": star,
                         "before": before.get(str(star)), "after": after.get(str(star))})
    return pd.DataFrame(rows, columns=["tag", "size", "method", "star", "before", "after"])


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out = []
        for key in sorted(data, key=str):
            if not prefix and key in MANIFEST_SKIP:
                continue
            out += _leaves(data[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(data, list) and len(data) > 20:
        return [(prefix, f"[{len(data)} items]")]
    return [(prefix, data)]


def ingest_tables(manifest: dict | None) -> list[tuple[Table, str]]:
    """The ingest manifest as tables: its totals and facts (key, value), quarantined rows by
    reason (totals.rejected of starscale.ingest.build_manifest) and the per-file counts.
    Keys the manifest lacks give empty tables; unknown keys still appear under 'ingest'."""
    if manifest is None:
        return [(Table("ingest", ["key", "value"], []), "")]
    facts = {k: v for k, v in manifest.items() if k != "files"}
    out = [(Table("ingest", ["key", "value"], [[k, v] for k, v in _leaves(facts)
                                               if not k.startswith("totals.rejected.")]), "Totals")]
    totals = manifest.get("totals") if isinstance(manifest.get("totals"), dict) else {}
    by_reason = totals.get("rejected") if isinstance(totals.get("rejected"), dict) else {}
    out.append((Table("ingest_quarantine", ["reason", "rows"],
                      [[reason, n] for reason, n in sorted(by_reason.items())]),
                "Quarantined rows by reason"))
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else []
    cols = ["path", "lines", "header_lines", "accepted", "rejected_total", "rejected_share"]
    out.append((Table("ingest_files", cols + ["rejected"],
                      [[f.get(c) for c in cols] + [f.get("rejected")] for f in files
                       if isinstance(f, dict)]), "Per input file"))
    return out


def stage_timings_table(manifests: Mapping[str, dict]) -> Table:
    rows = [[key, m.get("stage"), m.get("seconds"), m.get("created_utc")]
            for key, m in sorted(manifests.items())]
    return Table("stage_timings", ["folder", "stage", "seconds", "created_utc"], rows)


def versions_table(own: Mapping[str, str], manifests: Mapping[str, dict]) -> Table:
    """package, version, where: one row per distinct version of each package."""
    seen: dict[tuple[str, str], list[str]] = {}
    for where, vers in [("report", own)] + [(k, m.get("versions") or {})
                                             for k, m in sorted(manifests.items())]:
        for package, version in sorted(vers.items()):
            seen.setdefault((package, str(version)), []).append(where)
    rows = [[p, v, ", ".join(w)] for (p, v), w in sorted(seen.items())]
    return Table("versions", ["package", "version", "where"], rows)


# --------------------------------------------------------------------------- the report
class _Page:
    """The report being written: files (PNG, JSON), tables by id, and its content as blocks
    (dicts with a kind) that templates/report.html.j2 and report.md.j2 render."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.tables: dict[str, Table] = {}
        self.blocks: list[dict[str, Any]] = []

    def section(self, heading: str, text: str = "") -> None:
        self.blocks.append({"kind": "heading", "level": 2, "text": heading})
        if text:
            self.paragraph(text)

    def paragraph(self, text: str) -> None:
        self.blocks.append({"kind": "paragraph", "text": text})

    def add_table(self, t: Table, caption: str = "", collapsed: bool = False) -> None:
        """collapsed: folded in the page (wide tables), whole in the markdown."""
        self.tables[t.id] = t
        if caption:
            self.blocks.append({"kind": "heading", "level": 3, "text": caption})
        self.blocks.append({"kind": "table", "table": t, "collapsed": collapsed})

    def add_image(self, name: str, data: bytes, alt: str) -> None:
        self.files[name] = data
        self.blocks.append({"kind": "image", "name": name, "alt": alt})

    def add_list(self, list_id: str, entries: list[tuple[str, bool]]) -> None:
        """A bullet list of (text, strong) entries."""
        self.blocks.append({"kind": "list", "id": list_id, "entries": entries})

    def add_code(self, code_id: str, lang: str, text: str) -> None:
        self.blocks.append({"kind": "code", "id": code_id, "lang": lang, "text": text})

    def render(self, title: str) -> dict[str, bytes]:
        """{index.html, report.md}: the blocks through the two templates."""
        out = {}
        for name, template in ((INDEX_HTML, "report.html.j2"), (REPORT_MD, "report.md.j2")):
            text = _templates().get_template(template).render(title=title, blocks=self.blocks)
            out[name] = (text.rstrip("\n") + "\n").encode()
        return out


@functools.cache
def _templates() -> jinja2.Environment:
    """The templates in starscale/templates/ (PackageLoader reads a folder or the --py-files
    zip); autoescaped for HTML only."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("starscale", "templates"),
                             autoescape=lambda name: (name or "").endswith(".html.j2"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = fmt
    env.filters["md_cell"] = _md_cell
    return env


def build_report(results: pd.DataFrame, load_predictions: Callable[..., pd.DataFrame], *,
                 manifests: Mapping[str, dict], config: Mapping[str, Any],
                 versions: Mapping[str, str], plateau_min_gain: float, bootstrap: int, seed: int,
                 alpha: float = 0.05, include_study_points: bool = True,
                 sampling_at: int | str | None = None, title: str = "starscale report",
                 margin: float = 0.005, decide_on: str = "raw") -> Report:
    """Everything the report shows, as files: {name: bytes} plus the verdict and plateaus.

    manifests: {folder relative to run.output_dir ('ingest', 'sample/<tag>', ...): manifest}.
    load_predictions(run_id, split='test') → predictions frame (review_id, label, pred[, proba]).
    margin / decide_on: the pre-registered decision rule (verdict.decide).
    """
    table = verdict.annotate(results, full_rows_from_manifests(manifests))
    curves = table[table["in_curve"]].reset_index(drop=True)
    points = one_per_point(curves)
    plateaus = verdict.curve_plateaus(points, plateau_min_gain)
    verdicts = verdict.decide(table, load_predictions, n=bootstrap, seed=seed, alpha=alpha,
                              margin=margin, decide_on=decide_on)
    primary = verdict.primary_result(verdicts, alpha, margin)
    ordered = table.sort_values(["model", "series", "train_rows", "sample_method", "replicate"],
                                kind="stable", na_position="last")
    page = _Page()
    page.section("Pre-registered comparison")
    page.paragraph(preregistration(margin=margin, decide_on=decide_on, alpha=alpha,
                                   bootstrap=bootstrap, seed=seed))
    _verdict_section(page, verdicts, primary, margin, alpha)
    _design_section(page, verdicts, table, config)
    _selection_section(page, curves)
    _lstm_training_section(page, table)
    _curves_section(page, points, plateaus, alpha, plateau_min_gain, include_study_points)
    page.section("Results", "Every row of the results table (in_curve: the run is on the "
                 "curves; a rerun of the same series and tag supersedes the earlier one; "
                 "replicate > 0: a seed replicate of a selected cell, used by the verdict only).")
    page.add_table(_frame_table("results", ordered, list(RESULT_COLUMNS)))
    size = _sampling_section(page, points, sampling_at)
    best_runs = _best_section(page, curves, load_predictions)
    _data_sections(page, manifests, size)
    _timings_section(page, manifests, table, ordered)
    _config_section(page, ordered, table, config, versions, manifests)
    summary = {"verdicts": verdicts, "primary": primary,
               "sentences": verdict.primary_sentences(primary)
               + [v["sentence"] for v in verdicts],
               "plateaus": plateaus, "best_runs": best_runs,
               "sampling_size": size, "plateau_min_gain": plateau_min_gain,
               "bootstrap": bootstrap, "seed": seed, "alpha": alpha, "margin": margin,
               "decide_on": decide_on}
    page.files["verdict.json"] = verdict.dumps(summary).encode()
    page.files.update(page.render(title))
    return Report(files=page.files, verdicts=verdicts, plateaus=plateaus, tables=page.tables,
                  primary=primary)


def one_per_point(curves: pd.DataFrame) -> pd.DataFrame:
    """One run per (series, sampler, training rows): where the LSTM's tuning grid trained
    several settings of a cell, the one with the highest validation score (the choice made on
    validation), so that every curve has one point per size."""
    if curves.empty:
        return curves
    ordered = curves.assign(_val=pd.to_numeric(curves["val_score"], errors="coerce"))
    ordered = ordered.sort_values("_val", ascending=False, kind="stable", na_position="last")
    keep = ordered.drop_duplicates(["series", "sample_method", "train_rows"]).index
    return curves.loc[sorted(keep)].reset_index(drop=True)


def preregistration(*, margin: float, decide_on: str, alpha: float, bootstrap: int,
                    seed: int) -> str:
    """The comparison as fixed before any test score is read (docs/report.md says the same)."""
    basis = ("raw predictions (argmax of the class probabilities)" if decide_on == "raw" else
             "predictions after per-class decision offsets fitted on the validation split")
    return (
        "Question: does the LSTM beat the plateaued LR? Primary result: the LSTM against every "
        "LR feature setting (the study's 4,000 top-count TF-IDF 1-3-grams and the hashed "
        "1-3-grams), each selected on validation, at the largest training size both have, on "
        f"the study's score of the {basis}; the LSTM beats the plateau only if it beats each. "
        "Accuracy, macro F1 and the other basis are descriptive. "
        "Chosen on the validation split only: the LR's regularisation (lr.reg_grid), the "
        "LSTM's learning rate and width (experiment.lstm_learning_rates x lstm_units at the "
        "tuning size, carried to the larger sizes) and its best epoch, and per model and size "
        "the sampler. The selected cells at the largest size are retrained with "
        "experiment.seeds seeds (auto: 5, topped up by the rule in docs/report.md). Test scores "
        "of the other cells are only drawn on the curves, never used to choose. "
        f"Interval: for LSTM − LR of the mean over seeds, {1 - alpha:.0%}: each model's seed "
        f"variance (s²/k) plus the paired test-row bootstrap variance ({bootstrap} resamples, "
        "seed "
        f"{seed}), t with Welch–Satterthwaite degrees of freedom. Decision with the margin "
        f"m = {margin:g} (report.margin, the effect size of interest): better by more than m "
        "(lo > m); worse by more than m (hi < −m); equivalent within ±m (both ends inside); "
        "not worse by more than m, a gain not shown (only lo > −m); does not beat by m (only "
        "hi < m); otherwise inconclusive. An LR that did not converge or was chosen at its "
        "grid's edge is flagged and the primary result then carries a warning.")


def _verdict_section(page: _Page, verdicts: list[dict], primary: dict | None, margin: float,
                     alpha: float) -> None:
    page.section("Verdict", "Does an LSTM trained on the full corpus beat the plateaued "
                 "class-balanced LR? The primary result first (the LSTM against every LR "
                 "setting selected on validation), then one sentence per LR setting; the "
                 "table shows every metric on both bases (role: primary or descriptive).")
    lines = ([(primary["sentence"], True)] + [(w, True) for w in primary["warnings"]]
             if primary else [])
    if verdicts:
        page.add_list("verdict-sentences", lines + [(v["sentence"], False) for v in verdicts])
    else:
        page.add_list("verdict-sentences", [("No verdict yet: no size has selected runs of "
                                             "both the LSTM and an LR.", False)])
    rows = []
    for v in verdicts:
        for basis in ("raw", "offsets"):
            numbers = v.get(basis)
            if numbers is None:
                continue
            for m in metrics.METRICS:
                d = numbers[m]
                role = ("primary" if v.get("primary") and basis == v["decided_on"]
                        and m == "score" else "descriptive")
                rows.append([v["lr_series"], v["rows"], basis, m, role, v["lstm_cell"],
                             v["lr_cell"], len(v["lstm_runs"]), len(v["lr_runs"]), d["diff"],
                             d["lo"], d["hi"], d["half_width"], d["detectable"], d["df"],
                             d["a_sd"], d["b_sd"], d["outcome"], v.get("lr_converged"),
                             v.get("lr_grid_edge"), v["n_test"]])
    page.add_table(Table("verdict", ["lr_series", "rows", "basis", "metric", "role",
                                     "lstm_cell", "lr_cell", "lstm_seeds", "lr_seeds", "diff",
                                     "lo", "hi", "half_width", "detectable", "df",
                                     "lstm_seed_sd", "lr_seed_sd", "outcome", "lr_converged",
                                     "lr_grid_edge", "n_test"], rows),
                   f"LSTM − LR, mean over seeds, {1 - alpha:.0%} interval; detectable: the "
                   "smallest true difference this design detects with 80% power; "
                   "lr_converged / lr_grid_edge: flags of the comparator LR")


def _design_section(page: _Page, verdicts: list[dict], table: pd.DataFrame,
                    config: Mapping[str, Any]) -> None:
    """What the run could resolve (half-width, detectable difference against the margin), the
    seeds used and the seed rule, and both models' tuning budgets."""
    exp = dict(config.get("experiment") or {})
    margin = float((config.get("report") or {}).get("margin") or 0.0)
    page.section("Design: resolution, seeds and tuning budgets",
                 "Half-width: of the primary score interval as run; detectable: the smallest "
                 "true LSTM − LR difference this design finds with 80% power at the test's "
                 f"level. The margin m = {margin:g} is only decidable where both are below it. "
                 "Seeds: the replicates each compared cell had, their validation scores' "
                 "spread (what the seed rule reads) and the number the rule asks for.")
    rows = []
    for v in verdicts:
        if v.get("primary"):
            d = (v[v["decided_on"]] or v["raw"])["score"]
            rows.append([v["lr_series"], v["rows"], d["half_width"], d["detectable"], margin,
                         d["detectable"] <= margin])
    page.add_table(Table("resolution", ["lr_series", "rows", "half_width", "detectable",
                                        "margin", "margin_resolvable"], rows),
                   "Resolution of the primary comparisons")
    page.add_table(seed_plan_table(verdicts, table, exp), "Seeds used")
    page.add_table(budget_table(table), "Tuning budgets (every fit of the grid and the seeds)")


def seed_plan_table(verdicts: list[dict], table: pd.DataFrame, exp: Mapping[str, Any]) -> Table:
    """Per compared cell: seeds used, the sd of their validation scores and the rule's k
    (metrics.seeds_for_half_width with experiment.seed_half_width), capped at
    experiment.max_seeds and uncapped."""
    half = exp.get("seed_half_width")
    cap = exp.get("max_seeds")
    rows, seen = [], set()
    for v in verdicts:
        for model, cell, runs in (("LSTM", v["lstm_cell"], v["lstm_runs"]),
                                  (v["lr_series"], v["lr_cell"], v["lr_runs"])):
            if (model, cell) in seen:
                continue
            seen.add((model, cell))
            vals = pd.to_numeric(table[table["run_id"].isin(runs)]["val_score"],
                                 errors="coerce").dropna()
            sd = float(vals.std(ddof=1)) if len(vals) > 1 else None
            wanted = (metrics.seeds_for_half_width(sd, len(vals), float(half), int(cap))
                      if sd is not None and half and cap else None)
            uncapped = (metrics.seeds_for_half_width(sd, len(vals), float(half), UNCAPPED)
                        if sd is not None and half else None)
            rows.append([model, cell, len(runs), sd, wanted, uncapped, cap, exp.get("seeds")])
    return Table("seed_plan", ["model", "cell", "seeds_used", "val_score_sd", "rule_k",
                               "rule_k_uncapped", "max_seeds", "experiment_seeds"], rows)


UNCAPPED = 10 ** 9     # seeds_for_half_width's cap when the report shows what the rule asks for


def budget_table(table: pd.DataFrame) -> Table:
    """Per model series: the fits it got (an LR run fits every lr.reg_grid point; an LSTM run
    is one fit) and their fitting minutes (wall time of the fits on this machine's cores)."""
    rows = []
    latest = table[table["latest"]] if "latest" in table.columns else table
    for series, group in latest.groupby("series", sort=True):
        fits = 0
        for r in group.to_dict("records"):
            raw = r.get("lr_grid")
            fits += len(json.loads(raw)) if isinstance(raw, str) and raw else 1
        rows.append([series, int(len(group)), fits, _minutes(group, "fit_seconds"),
                     _minutes(group, "stage_seconds")])
    return Table("budgets", ["series", "runs", "fits", "fit_minutes", "stage_minutes"], rows)


def _minutes(runs: pd.DataFrame, column: str) -> float | None:
    """The sum of a seconds column in minutes; None when no run has it."""
    if column not in runs.columns:
        return None
    seconds = pd.to_numeric(runs[column], errors="coerce")
    return float(seconds.sum()) / 60.0 if seconds.notna().any() else None


def _lstm_training_section(page: _Page, table: pd.DataFrame) -> None:
    """Per LSTM run: its learning rate and width, steps per epoch, epochs run and the best
    epoch (early stopping: patience counts from the first epoch; lstm.min_steps only raises
    the planned epochs)."""
    runs = table[(table["model"] == "lstm") & table["latest"]]
    if runs.empty:
        return
    frame = runs.assign(steps_run=pd.to_numeric(runs.get("epochs_run"), errors="coerce")
                        * pd.to_numeric(runs.get("steps_per_epoch"), errors="coerce"))
    page.add_table(_frame_table("lstm_training", frame.sort_values(["train_rows", "tag"]),
                                ["run_id", "tag", "replicate", "lstm.learning_rate",
                                 "lstm.units", "steps_per_epoch", "lstm.min_steps",
                                 "epochs_run", "steps_run", "best_epoch", "stopped_early",
                                 "val_score", "fit_seconds"]),
                   "LSTM training per run: epochs run and the best epoch (weights kept). "
                   "lstm.min_steps raises the planned epochs; early stopping (patience on the "
                   "validation score) may still end a run before them.")


def _selection_section(page: _Page, curves: pd.DataFrame) -> None:
    """Every (series, size, sampler) with its validation score and whether it was selected."""
    page.section("Selection on validation", "Per model and size, the sampler with the highest "
                 "validation score is selected (test scores are not read for this).")
    chosen = verdict.select(curves)
    picked = set(chosen["run_id"]) if not chosen.empty else set()
    known = curves.sort_values(["series", "train_rows", "sample_method"], kind="stable")
    page.add_table(Table("selection", ["series", "train_rows", "sample_method", "run_id",
                                       "val_score", "selected"],
                         [[r["series"], r["train_rows"], r["sample_method"], r["run_id"],
                           r.get("val_score"), r["run_id"] in picked]
                          for r in known.to_dict("records")]))
    tuning = lr_tuning_rows(curves)
    if tuning:
        page.add_table(Table("lr_tuning", ["series", "tag", "reg_param", "iterations",
                                           "converged", "objective_change", "val_score",
                                           "selected"], tuning),
                       "LR regularisation grid (validation score; converged: stopped before "
                       "lr.max_iter)")


def lr_tuning_rows(curves: pd.DataFrame) -> list[list[Any]]:
    """The lr.reg_grid evidence of every LR run (its lr_grid column, JSON)."""
    rows = []
    if "lr_grid" not in curves.columns:
        return rows
    for r in curves[curves["model"] == "lr"].to_dict("records"):
        raw = r.get("lr_grid")
        if not isinstance(raw, str) or not raw:
            continue
        for point in json.loads(raw):
            rows.append([r["series"], r.get("tag"), point.get("reg_param"),
                         point.get("iterations"), point.get("converged"),
                         point.get("objective_change"), point.get("val_score"),
                         point.get("selected")])
    return rows


def _curves_section(page: _Page, curves: pd.DataFrame, plateaus: list[dict], alpha: float,
                    plateau_min_gain: float, include_study_points: bool) -> None:
    page.section("Learning curves", "Score, accuracy and macro F1 against training rows (ladder "
                 f"size before resampling; log scale) with their {1 - alpha:.0%} bootstrap "
                 "intervals. Dotted vertical lines: plateaus (every further doubling of rows "
                 f"gains less than {plateau_min_gain} score). Plateaus are descriptive: they "
                 "read single test scores (replicate 0), not intervals, and no decision rests "
                 "on them."
                 + (" Stars: the earlier study's scores on the Wireless corpus "
                    "(amazon_reviews_us_Wireless_v1_00), drawn for reference whatever corpus "
                    "this run used." if include_study_points else ""))
    page.add_image("learning_curves.png",
                   learning_curves_png(curves, plateaus, include_study_points), "learning curves")
    page.add_table(Table("plateau", ["series", "sample_method", "points", "status",
                                     "plateau_rows", "min_gain"],
                         [[p["series"], p["sample_method"], p["points"], p["status"],
                           p["plateau_rows"], p["min_gain"]] for p in plateaus]), "Plateaus")
    page.add_table(Table("plateau_segments", ["series", "sample_method", "from_rows", "to_rows",
                                              "from_score", "to_score", "doublings",
                                              "gain_per_doubling", "below_min_gain"],
                         [[p["series"], p["sample_method"], s["from_rows"], s["to_rows"],
                           s["from_score"], s["to_score"], s["doublings"], s["gain_per_doubling"],
                           s["below"]] for p in plateaus for s in p["segments"]]),
                   "Evidence: gain per doubling of each segment")
    if include_study_points:
        page.add_table(Table("study_points", ["model", "rows", "score", "label"],
                             [[p["model"], p["rows"], p["score"], p["label"]]
                              for p in verdict.STUDY_POINTS]),
                       "The earlier study's points (Wireless corpus)")


def _sampling_section(page: _Page, curves: pd.DataFrame, sampling_at: int | str | None):
    """The sampler comparison at one size; returns that size (None without runs)."""
    size = sampling_size(curves, sampling_at)
    at_size = (curves[curves["sample_size"].astype(str) == size] if size is not None
               and "sample_size" in curves.columns else curves.iloc[0:0])
    page.section("Sampling comparison", f"All samplers run at sample_size {size}."
                 if size is not None else "No runs yet.")
    page.add_image("sampling.png", sampling_png(at_size, str(size)), "sampler comparison")
    page.add_table(_frame_table("sampling", at_size.sort_values(["series", "sample_method"]),
                                ["series", "sample_method", "run_id", "score", "score_lo",
                                 "score_hi", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1",
                                 "macro_f1_lo", "macro_f1_hi"]))
    return size


def _best_section(page: _Page, curves: pd.DataFrame, load_predictions) -> list[dict]:
    """Confusion matrix and per-class numbers of the best LR and LSTM runs; returns them."""
    page.section("Best models", "The LR and LSTM runs with the highest validation score: "
                 "confusion matrix (rows: "
                 "true star; cell: count and share of the row) and per-class precision, recall "
                 "and F1.")
    best_runs = []
    for model in ("lr", "lstm"):
        runs = curves[curves["model"] == model]
        if runs.empty:
            page.paragraph(f"No {model.upper()} run yet.")
            continue
        key = "val_score" if runs["val_score"].notna().any() else "score"
        best = runs.sort_values(key, kind="stable", na_position="first").iloc[-1].to_dict()
        best_runs.append({"model": model, "run_id": best["run_id"], "series": best["series"],
                          "tag": best.get("tag"), "score": best["score"]})
        name = (f"{best['series']} {best.get('tag')} (run {best['run_id']}, "
                f"score {best['score']:.4f})")
        plot_title = name.replace(" (run ", "\n(run ")
        conf = _confusion_of(best, load_predictions)
        if conf is not None:
            page.add_image(f"confusion_{model}.png", confusion_png(conf, plot_title),
                           f"confusion {model}")
        per_class = _per_class_of(best, conf)
        if per_class is not None:
            page.add_image(f"per_class_{model}.png", per_class_png(per_class, plot_title),
                           f"per class {model}")
            page.add_table(_frame_table(f"per_class_{model}", per_class,
                                        ["star", "precision", "recall", "f1", "support"]),
                           f"Per class: {name}")
    return best_runs


def _data_sections(page: _Page, manifests: Mapping[str, dict], size) -> None:
    counts = class_counts_table(manifests)
    page.section("Class distributions", "Train rows per star before and after resampling, from "
                 "the sample stages' manifests (the plot shows the tags of the sampler "
                 "comparison).")
    shown = counts[counts["size"].astype(str) == str(size)] if not counts.empty else counts
    page.add_image("class_distribution.png",
                   class_distribution_png(shown if not shown.empty else counts),
                   "class distribution")
    page.add_table(_frame_table("class_counts", counts,
                                ["tag", "method", "star", "before", "after"]))
    ingest = manifests.get("ingest")
    page.section("Ingest", "Rows accepted and quarantined (by reason), from "
                 "ingest/_MANIFEST.json." if ingest is not None else "No ingest manifest found.")
    for ingest_part, caption in ingest_tables(ingest):
        page.add_table(ingest_part, caption)


def _timings_section(page: _Page, manifests: Mapping[str, dict], table: pd.DataFrame,
                     ordered: pd.DataFrame) -> None:
    page.section("Timings", "Seconds per published stage folder (from the manifests) and the "
                 "training runs' timings and throughput (from the results rows).")
    page.add_table(stage_timings_table(manifests), "Stages")
    timing_cols = [c for c in table.columns if "." not in c and TIMING_PATTERN.search(c)
                   and c != "created_utc"]
    page.add_table(_frame_table("training_timings", ordered,
                                ["run_id", "series", "tag", "train_rows", *sorted(timing_cols)]),
                   "Training runs")
    page.add_table(rank_placement_table(manifests), "Horovod ranks: which host and GPU each "
                   "rank had (GPU empty: trained on CPU)")


def rank_placement_table(manifests: Mapping[str, dict]) -> Table:
    """Where each LSTM's Horovod ranks ran: host, GPU (Spark's address; empty on CPU), the
    rank's address on Gloo's interface and its device, from the models' manifests."""
    rows = []
    for folder, manifest in sorted(manifests.items()):
        for rank in manifest.get("ranks") or []:
            place = rank.get("placement") or {}
            rows.append({"model": folder, "rank": rank.get("rank"), "host": place.get("host"),
                         "GPU": place.get("gpu") if place.get("gpu") is not None else "",
                         "address": place.get("address"), "interface": place.get("iface"),
                         "device": place.get("device")})
    columns = ["model", "rank", "host", "GPU", "address", "interface", "device"]
    return _frame_table("rank-placement", pd.DataFrame(rows, columns=columns), columns)


def _config_section(page: _Page, ordered: pd.DataFrame, table: pd.DataFrame,
                    config: Mapping[str, Any], versions: Mapping[str, str],
                    manifests: Mapping[str, dict]) -> None:
    import yaml
    page.section("Config and versions", "The resolved config of this report run, each run's "
                 "hyperparameters (dotted results columns) and the versions recorded in every "
                 "manifest.")
    hyper_cols = sorted(c for c in table.columns if "." in c)
    page.add_table(_frame_table("hyperparameters", ordered, ["run_id", *hyper_cols]), "Runs",
                   collapsed=True)
    page.add_table(versions_table(versions, manifests), "Versions")
    config_text = yaml.safe_dump(verdict.jsonable(dict(config)), sort_keys=False)
    page.blocks.append({"kind": "heading", "level": 3, "text": "Config"})
    page.add_code("config", "yaml", config_text)

