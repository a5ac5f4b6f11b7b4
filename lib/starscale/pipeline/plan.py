"""The experiment's grid and plan: which stage runs for which cell, with which derived config.

Pure helpers (no Spark, no paths read): ``grid_sizes`` resolves ``experiment.sizes`` against the
ladder, ``cell_config`` derives one cell's frozen Config with ``dataclasses.replace``, ``plan``
lists every step in run order, ``forced_stages`` reads ``--force [STAGE]``, and the rest turn
manifests and results rows into progress lines and the summary table. The runner
(pipeline.runner) executes the plan; MLflow lives in pipeline.tracking.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from starscale.config import Config, LRFeaturesConfig
from starscale import verdict
from starscale.verdict import truthy

# Stages in dependency order; a forced stage reruns, and everything after it reruns because
# its input fingerprints change.
STAGE_ORDER = ("make-corpus", "ingest", "prepare", "sample", "encode", "train-lr", "train-lstm",
               "report")


@dataclass(frozen=True)
class Step:
    """One stage run of the experiment: the stage, the cell it belongs to, its derived config.
    deferred: an LSTM step at a size after experiment.tuning_size, whose learning rate and
    width are the ones chosen there (the runner resolves it with resolve_lstm)."""
    stage: str
    cell: str            # '' for stages outside the grid (ingest, prepare, report)
    cfg: Config
    deferred: bool = False


def grid_sizes(wanted: list | None, ladder_sizes: list) -> list:
    """experiment.sizes (None: every ladder size) in ladder order; ValueError for a size the
    ladder does not have (prepare computes quotas for ladder.sizes only)."""
    if wanted is None:
        return list(ladder_sizes)
    missing = [s for s in wanted if s not in ladder_sizes]
    if missing:
        raise ValueError(f"experiment.sizes: {missing} not in ladder.sizes {ladder_sizes} "
                         f"(add them to ladder.sizes; that reruns prepare)")
    return [s for s in ladder_sizes if s in wanted]


def cell_config(cfg: Config, size: int | str, sampler: str,
                features: LRFeaturesConfig | None = None, engine: str | None = None,
                replicate: int = 0) -> Config:
    """cfg with sample.size/method (and encode's TF-IDF setting, lr.engine) set for one cell.

    replicate k > 0: the seed replicate k of the cell — sample.seed, encode.seed and run.seed
    (the LSTM's initialisation and data order) each offset by k, and tags ending in _r<k>."""
    sample = dataclasses.replace(cfg.sample, size=size, method=sampler, replicate=replicate,
                                 seed=cfg.sample.seed + replicate)
    out = dataclasses.replace(cfg, sample=sample)
    if replicate:
        out = dataclasses.replace(
            out, encode=dataclasses.replace(out.encode, seed=cfg.encode.seed + replicate),
            run=dataclasses.replace(out.run, seed=cfg.run.seed + replicate))
    if features is not None:
        out = dataclasses.replace(out, encode=dataclasses.replace(
            out.encode, tfidf_features=features.features, tfidf_hashed=features.hashed))
    if engine is not None:
        out = dataclasses.replace(out, lr=dataclasses.replace(out.lr, engine=engine))
    return out


def lstm_widths(cfg: Config) -> list[int]:
    """experiment.lstm_units, or [lstm.units] when null."""
    return list(cfg.experiment.lstm_units or [cfg.lstm.units])


def lstm_rates(cfg: Config) -> list[float]:
    """experiment.lstm_learning_rates, or [lstm.learning_rate] when null."""
    return [float(r) for r in (cfg.experiment.lstm_learning_rates or [cfg.lstm.learning_rate])]


def lstm_settings(cfg: Config) -> list[tuple[float, int]]:
    """The LSTM's tuning grid: (learning rate, width) pairs, rates outer."""
    return [(rate, units) for rate in lstm_rates(cfg) for units in lstm_widths(cfg)]


def lstm_cell(cell: Config, units: int, widths: list[int], learning_rate: float | None = None,
              rates: list[float] | None = None) -> Config:
    """The cell's config for one LSTM setting: the first width and rate keep the plain tag, the
    others are variants ('u128', 'lr0.002', 'u128_lr0.002': tags end in them)."""
    rate = cell.lstm.learning_rate if learning_rate is None else float(learning_rate)
    parts = ([f"u{units}"] if units != widths[0] else []) + (
        [f"lr{rate:g}"] if rates and rate != rates[0] else [])
    return dataclasses.replace(cell, lstm=dataclasses.replace(
        cell.lstm, units=units, learning_rate=rate, variant="_".join(parts) or None))


def tuning_size(cfg: Config) -> int | str | None:
    """experiment.tuning_size (it must be one of the grid's sizes), or None: every size runs
    the LSTM's whole grid."""
    wanted = cfg.experiment.tuning_size
    if wanted is None:
        return None
    sizes = grid_sizes(cfg.experiment.sizes, cfg.ladder.sizes)
    if str(wanted) not in map(str, sizes):
        raise ValueError(f"experiment.tuning_size: {wanted!r} is not one of the grid's sizes "
                         f"{sizes}")
    return next(s for s in sizes if str(s) == str(wanted))


def plan(cfg: Config) -> list[Step]:
    """Every step of the experiment in run order.

    make-corpus (only when ingest.inputs is empty) → ingest → prepare → per size (the tuning
    size first, then ladder order) per sampler: sample → per LR feature setting: encode → LR
    per engine → the LSTM on the first setting's encode (every (learning rate, width) of the
    grid at the tuning size or, without one, at every size; at the other sizes one deferred
    step for the setting chosen at the tuning size) → report. Cell labels are the folders the
    steps publish under.
    """
    exp = cfg.experiment
    steps: list[Step] = []
    if not cfg.ingest.inputs:
        steps.append(Step("make-corpus", "", cfg))
    steps += [Step("ingest", "", cfg), Step("prepare", "", cfg)]
    tuned_at = tuning_size(cfg)
    sizes = grid_sizes(exp.sizes, cfg.ladder.sizes)
    if tuned_at is not None:
        sizes = [tuned_at] + [s for s in sizes if s != tuned_at]
    widths, rates = lstm_widths(cfg), lstm_rates(cfg)
    for size in sizes:
        for sampler in exp.samplers:
            cell = cell_config(cfg, size, sampler, exp.lr_features[0])
            steps.append(Step("sample", cell.sample_tag(), cell))
            for features in exp.lr_features:
                encoded = cell_config(cfg, size, sampler, features)
                steps.append(Step("encode", encoded.encode_tag(), encoded))
                if "lr" in exp.models:
                    for engine in exp.lr_engines:
                        lr_cell = cell_config(cfg, size, sampler, features, engine)
                        steps.append(Step("train-lr", f"lr_{engine}/{lr_cell.encode_tag()}",
                                          lr_cell))
            if "lstm" not in exp.models:
                continue
            if tuned_at is None or size == tuned_at:
                for rate, units in lstm_settings(cfg):
                    variant = lstm_cell(cell, units, widths, rate, rates)
                    steps.append(Step("train-lstm", f"lstm/{variant.lstm_tag()}", variant))
            else:
                steps.append(Step("train-lstm", f"lstm/{cell.sample_tag()} (tuned setting)",
                                  cell, deferred=True))
    steps.append(Step("report", "", cfg))
    return steps


def tuned_lstm(runs: list[Mapping[str, Any]], size: int | str) -> tuple[float, int] | None:
    """The LSTM's (learning rate, width) chosen on validation at the tuning size: the setting
    of the LSTM run verdict.pick_best selects among every sampler and setting there (None
    without LSTM runs with a validation score)."""
    lstm = [dict(r) for r in runs if r.get("model") == "lstm"
            and str(r.get("sample_size")) == str(size)]
    if not lstm:
        return None
    import pandas as pd
    best = verdict.pick_best(pd.DataFrame(lstm).assign(series="LSTM"), ["series"])
    if best.empty:
        return None
    row = best.iloc[0]
    return float(row["lstm.learning_rate"]), int(float(row["lstm.units"]))


def resolve_lstm(step: Step, cfg: Config, choice: tuple[float, int]) -> Step:
    """A deferred LSTM step with the setting chosen at the tuning size."""
    rate, units = choice
    variant = lstm_cell(step.cfg, units, lstm_widths(cfg), rate, lstm_rates(cfg))
    return Step("train-lstm", f"lstm/{variant.lstm_tag()}", variant)


# Samplers whose output depends on their seed: an LR on their rows differs between replicates.
# An LR on all rows (none, class_weight) is deterministic, so its replicates would be copies.
RANDOM_SAMPLERS = ("random_under", "random_over", "adasyn")


@dataclass(frozen=True)
class Selected:
    """A cell chosen on validation at the largest size, to be trained with more seeds."""
    model: str                      # lr | lstm
    size: int | str
    sampler: str
    features: LRFeaturesConfig | None = None   # LR only
    engine: str | None = None                  # LR only
    units: int | None = None                   # LSTM only: its width
    learning_rate: float | None = None         # LSTM only: its learning rate (per rank)
    reg_param: float | None = None             # LR only: the regParam chosen on validation

    @property
    def stochastic(self) -> bool:
        """Whether another seed gives another model (an LR on all rows does not)."""
        return self.model == "lstm" or self.sampler in RANDOM_SAMPLERS

    def label(self) -> str:
        if self.model == "lstm":
            return f"lstm {self.sampler} (lr {self.learning_rate:g}, {self.units} units)" \
                if self.units and self.learning_rate else f"lstm {self.sampler}"
        hashed = " hashed" if self.features and self.features.hashed else ""
        return (f"lr {self.sampler} ({self.engine}, {self.features.features}{hashed}"
                + (f", regParam {self.reg_param:g}" if self.reg_param is not None else "") + ")")


AUTO_SEEDS = 5      # experiment.seeds: auto starts every selected stochastic cell with this many


def initial_seeds(cfg: Config) -> int:
    """Seeds of each selected cell before any top-up: experiment.seeds, or for auto
    AUTO_SEEDS (at most experiment.max_seeds)."""
    seeds = cfg.experiment.seeds
    return min(AUTO_SEEDS, cfg.experiment.max_seeds) if seeds == "auto" else int(seeds)


def replicate_steps(cfg: Config, selected: Iterable[Selected], start: int = 1,
                    stop: int | None = None) -> list[Step]:
    """Steps for seed replicates start .. stop − 1 (default 1 .. initial_seeds − 1) of the
    selected cells: sample and encode of each replicate (once per cell and feature setting),
    then its trainer with the selected setting (the LSTM's learning rate and width, the LR's
    regParam: a replicate repeats the chosen model with other seeds, it is not tuned again).
    An LR cell whose sampler has no randomness is not replicated (its replicates would be the
    same model)."""
    steps: list[Step] = []
    seen: set[tuple[str, str]] = set()

    def add(step: Step) -> None:
        if (step.stage, step.cell) not in seen:
            seen.add((step.stage, step.cell))
            steps.append(step)

    first = cfg.experiment.lr_features[0]
    stop = initial_seeds(cfg) if stop is None else stop
    for k in range(start, stop):
        for sel in selected:
            if not sel.stochastic:
                continue
            features = sel.features if sel.model == "lr" else first
            cell = cell_config(cfg, sel.size, sel.sampler, features, sel.engine, replicate=k)
            add(Step("sample", cell.sample_tag(), cell))
            add(Step("encode", cell.encode_tag(), cell))
            if sel.model == "lr":
                if sel.reg_param is not None:
                    cell = dataclasses.replace(cell, lr=dataclasses.replace(
                        cell.lr, reg_grid=[float(sel.reg_param)]))
                add(Step("train-lr", f"lr_{sel.engine}/{cell.encode_tag()}", cell))
            else:
                variant = lstm_cell(cell, sel.units or cfg.lstm.units, lstm_widths(cfg),
                                    sel.learning_rate, lstm_rates(cfg))
                add(Step("train-lstm", f"lstm/{variant.lstm_tag()}", variant))
    return steps


def selected_cells(runs: list[Mapping[str, Any]], size: int | str) -> list[Selected]:
    """From this grid's results rows: per series (verdict.series_label: the LSTM, each LR
    engine and feature setting) the sampler (and an LSTM's setting, an LR's regParam) that
    verdict.pick_best chooses at the given size: the verdict's own rule, on validation scores
    only. Replicates (replicate > 0) are not candidates."""
    import pandas as pd
    at_size = [dict(r) for r in runs if str(r.get("sample_size")) == str(size)
               and not int(float(r.get("replicate") or 0))]
    if not at_size:
        return []
    frame = pd.DataFrame(at_size).assign(series=[verdict.series_label(r) for r in at_size])
    out = []
    for row in verdict.pick_best(frame, ["series"]).to_dict("records"):
        if row.get("model") == "lstm":
            units, rate = row.get("lstm.units"), row.get("lstm.learning_rate")
            out.append(Selected("lstm", size, str(row["sample_method"]),
                                units=int(float(units)) if present(units) else None,
                                learning_rate=float(rate) if present(rate) else None))
        else:
            reg = row.get("lr.reg_param_effective")
            out.append(Selected("lr", size, str(row["sample_method"]), LRFeaturesConfig(
                features=int(float(row["encode.tfidf_features"])),
                hashed=truthy(row.get("encode.tfidf_hashed"))), str(row["engine"]),
                reg_param=float(reg) if present(reg) else None))
    return out


def seed_top_up(cfg: Config, selected: Iterable[Selected],
                runs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pre-registered top-up of experiment.seeds: auto, per selected stochastic cell: its
    replicates' validation scores (never the test split) → sd ŝ → k =
    metrics.seeds_for_half_width(ŝ, n, experiment.seed_half_width, experiment.max_seeds).
    Returns [{cell (the Selected), label, runs (n), val_sd, seeds (k)}]; [] unless auto."""
    from starscale import metrics
    if cfg.experiment.seeds != "auto":
        return []
    out = []
    for sel in selected:
        if not sel.stochastic:
            continue
        vals = [float(r["val_score"]) for r in runs if _is_replicate_of(r, sel)
                and present(r.get("val_score"))]
        if len(vals) < 2:
            continue
        sd = float(np.std(vals, ddof=1))
        k = metrics.seeds_for_half_width(sd, len(vals), cfg.experiment.seed_half_width,
                                         cfg.experiment.max_seeds)
        out.append({"cell": sel, "label": sel.label(), "runs": len(vals), "val_sd": sd,
                    "seeds": k})
    return out


def _is_replicate_of(row: Mapping[str, Any], sel: Selected) -> bool:
    """Whether a results row is one seed of a selected cell (same model, size, sampler and
    setting)."""
    if row.get("model") != sel.model or str(row.get("sample_size")) != str(sel.size) \
            or str(row.get("sample_method")) != sel.sampler:
        return False
    if sel.model == "lstm":
        return ((sel.units is None or int(float(row.get("lstm.units") or 0)) == sel.units) and
                (sel.learning_rate is None
                 or float(row.get("lstm.learning_rate") or 0) == sel.learning_rate))
    return (str(row.get("engine")) == sel.engine and sel.features is not None
            and int(float(row.get("encode.tfidf_features") or 0)) == sel.features.features
            and truthy(row.get("encode.tfidf_hashed")) == sel.features.hashed)


def forced_stages(force: bool | str) -> set[str]:
    """--force for the experiment: False → none, True (bare --force) → every stage, a stage
    name → that stage (its dependents rerun through their input fingerprints)."""
    if force is True:
        return set(STAGE_ORDER)
    if not force:
        return set()
    if force not in STAGE_ORDER:
        raise ValueError(f"--force {force!r}: not a stage of the experiment; one of "
                         f"{', '.join(STAGE_ORDER)}")
    return {force}


def stage_rows(stage: str, manifest: Mapping[str, Any] | None) -> int | None:
    """The row count a progress line shows for a stage's manifest (None when unknown)."""
    if not manifest:
        return None

    def total(value):
        if isinstance(value, Mapping):
            return sum(int(v) for v in value.values() if isinstance(v, (int, float)))
        return int(value) if isinstance(value, (int, float)) else None

    if stage == "make-corpus":
        return total(manifest.get("rows"))
    if stage == "ingest":
        return total((manifest.get("counts") or {}).get("reviews"))
    if stage == "prepare":
        return total(manifest.get("rows_out"))
    if stage == "sample":
        return total(manifest.get("rows_after"))
    if stage == "encode":
        return total((manifest.get("features_rows") or {}).get("train"))
    if stage in ("train-lr", "train-lstm"):
        return total(manifest.get("train_rows"))
    if stage == "report":
        return total(manifest.get("runs"))
    return None


def progress_line(stage: str, cell: str, rows: int | None, seconds: float, status: str) -> str:
    """'[experiment] sample 50000_random_under: 35,012 rows, 12.3 s (ran)'."""
    where = f"{stage} {cell}" if cell else stage
    count = f"{rows:,} rows" if rows is not None else "- rows"
    return f"[experiment] {where}: {count}, {seconds:.1f} s ({status})"


def _num(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(value) else f"{value:.4f}"


def summary_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Plain-text table of runs: model, size, sampler, score, accuracy, macro F1 (one per row)."""
    header = ("model", "size", "sampler", "score", "accuracy", "macro_f1")
    body = [(str(r.get("series") or r.get("model")), str(r.get("sample_size")),
             str(r.get("sample_method")), _num(r.get("score")), _num(r.get("accuracy")),
             _num(r.get("macro_f1"))) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, body)])


def run_label(row: Mapping[str, Any]) -> str:
    """Model name for the summary: 'lstm' or 'lr_mllib top4000' / 'lr_mllib hash1048576'."""
    if row.get("model") != "lr":
        return str(row.get("model"))
    kind = "hash" if truthy(row.get("encode.tfidf_hashed")) else "top"
    features = row.get("encode.tfidf_features")
    suffix = f" {kind}{int(float(features))}" if present(features) else ""
    return f"lr_{row.get('engine')}{suffix}"


def present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))

