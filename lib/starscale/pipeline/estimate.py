"""`experiment --plan`: the grid's steps in order, which would be skipped, and how long each
should take — from the manifests on disk, without a SparkSession (nothing starts a JVM).

A step is up to date when its published manifest exists, carries the config hash its stage
would compute, and records as its inputs the current fingerprints of its upstream manifests
(which must themselves be up to date); that is storage.run_stage's own skip rule, read with
pyarrow instead of Spark. Raw inputs (ingest.inputs, the results table the report reads) are
compared by size and mtime where they are local. Estimates, best first: the seconds its own
earlier manifest took; the rows/s of other manifests of the same stage in this output folder;
the benchmark rates of docs/bench (scale.json: data stages; demo_experiment.json: model stages
at demo size); else none.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from starscale import layout, storage
from starscale.config import Config
from starscale.pipeline import plan as plan_

BENCH_DIR = Path(__file__).resolve().parents[3] / "docs" / "bench"
DEMO_ROWS = 50_000                 # conf/demo.yaml's corpus, the size demo_experiment.json ran
# Stages each step reads (run_stage's upstream), by the stage names of plan_.STAGE_ORDER.
UPSTREAM = {"ingest": ("make-corpus",), "prepare": ("ingest",), "sample": ("prepare",),
            "encode": ("prepare", "sample"), "train-lr": ("encode",), "train-lstm": ("encode",)}


def _config_hashes() -> dict[str, Callable[[Config], str]]:
    """The config hash each stage passes to storage.run_stage (None: not checked)."""
    from starscale.stages import train_lr
    from starscale.training import launch
    return {"make-corpus": lambda c: c.section_hash("corpus"),
            "ingest": lambda c: c.section_hash("ingest"),
            "prepare": lambda c: c.section_hash("clean", "split", "ladder"),
            "sample": lambda c: c.section_hash("sample", "ladder"),
            "encode": lambda c: c.section_hash("encode", "sample", "ladder"),
            "train-lr": train_lr.config_hash, "train-lstm": launch.config_hash}


@dataclass
class PlannedStep:
    stage: str
    cell: str
    output: str
    status: str                 # 'skip' (up to date) | 'run'
    reason: str                 # why it runs: no output, config changed, input changed, ...
    rows: int | None            # expected rows (from its manifest or the grid)
    seconds: float | None
    basis: str                  # where the estimate comes from


def read_manifest(output: str) -> dict | None:
    """A published manifest without Spark (local or any pyarrow filesystem); None if absent or
    unreadable."""
    try:
        data = storage.read_bytes(storage.qualify(output) + "/" + storage.MANIFEST)
    except Exception:           # noqa: BLE001 — e.g. hdfs:// without libhdfs: unknown → runs
        return None
    return json.loads(data) if data else None


def _raw_changed(manifest: dict, patterns: list[str]) -> bool | None:
    """Compare local raw inputs' (path, size, mtime) with the manifest's; None: cannot tell."""
    recorded = manifest.get("inputs", {}).get("raw")
    if recorded is None:
        return None
    now = []
    for pattern in patterns:
        local = storage.local_path(pattern)
        if local is None:
            return None
        paths = [local] if os.path.isfile(local) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(local) for f in fs
            if not f.startswith(("_", ".")))
        now.extend({"path": storage.qualify(p), "size": os.path.getsize(p),
                    "mtime_ms": int(os.path.getmtime(p) * 1000)} for p in paths)
    def ids(items: list) -> list:
        return sorted((os.path.basename(str(i.get("path"))), int(i.get("size") or 0),
                       int(i.get("mtime_ms") or 0)) for i in items)
    return ids(now) != ids(recorded if isinstance(recorded, list) else [])


def _status(step: plan_.Step, manifest: dict | None, upstream: list[tuple[str, dict | None, str]],
            forced: set[str], hashes: dict) -> tuple[str, str]:
    if step.stage in forced:
        return "run", "forced"
    if manifest is None:
        return "run", "no output yet"
    expected = hashes.get(step.stage)
    if expected is not None and manifest.get("config_hash") != expected(step.cfg):
        return "run", "config changed"
    for path, up_manifest, up_status in upstream:
        if up_status == "run":
            return "run", "an input is recomputed"
        if up_manifest is not None and manifest.get("inputs", {}).get(
                storage.qualify(path)) != storage.fingerprint(up_manifest):
            return "run", "input changed"
    if step.stage == "ingest" and step.cfg.ingest.inputs:
        if _raw_changed(manifest, list(step.cfg.ingest.inputs)):
            return "run", "input files changed"
    return "skip", "up to date"


def _expected_rows(step: plan_.Step, known: dict[str, int | None]) -> int | None:
    size = step.cfg.sample.size
    if step.stage == "make-corpus":
        return step.cfg.corpus.rows
    if step.stage in ("ingest", "prepare"):
        return known.get("ingest") or (step.cfg.corpus.rows if not step.cfg.ingest.inputs else None)
    if step.stage in ("sample", "encode", "train-lr", "train-lstm"):
        if isinstance(size, int):
            return size
        total = known.get("prepare") or known.get("ingest")
        return int(total * step.cfg.split.train) if total else None
    return None


def bench_rates() -> dict[str, tuple[float, str]]:
    """stage → (rows/s, source) from docs/bench: scale.json's data stages at the largest size
    measured, demo_experiment.json's model stages at the demo's rows."""
    rates: dict[str, tuple[float, str]] = {}
    try:
        scale = json.loads((BENCH_DIR / "scale.json").read_text())
        for row in sorted(scale.get("results", []), key=lambda r: r.get("size") or 0):
            if row.get("rows_per_s") and row.get("rc") == 0:
                rates[row["stage"]] = (float(row["rows_per_s"]), f"bench scale {row['size']:,}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        demo = json.loads((BENCH_DIR / "demo_experiment.json").read_text())
        for row in demo.get("results", []):
            if row.get("stage") in plan_.STAGE_ORDER and row.get("seconds") and \
                    row["stage"] not in rates:
                rates[row["stage"]] = (DEMO_ROWS / float(row["seconds"]), "bench demo")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return rates


def estimate(cfg: Config, force: bool | str = False) -> list[PlannedStep]:
    """Every step of plan_.plan(cfg) with its status and estimate; reads manifests only."""
    forced = plan_.forced_stages(force)
    hashes = _config_hashes()
    steps = plan_.plan(cfg)
    manifests = {id(s): read_manifest(layout.stage_output(s.stage, s.cfg)) for s in steps}
    by_output: dict[str, tuple[dict | None, str]] = {}
    rates: dict[str, list[tuple[int, float]]] = {}
    for m_step in steps:
        m = manifests[id(m_step)]
        rows = plan_.stage_rows(m_step.stage, m)
        if m and rows and m.get("seconds"):
            rates.setdefault(m_step.stage, []).append((rows, float(m["seconds"])))
    bench = bench_rates()
    known: dict[str, int | None] = {}
    out: list[PlannedStep] = []
    for step in steps:
        output = storage.qualify(layout.stage_output(step.stage, step.cfg))
        manifest = manifests[id(step)]
        if step.stage == "report":
            trainers_run = any(p.status == "run" for p in out if p.stage in plan_.STAGE_ORDER[5:7])
            status, reason = ("run", "forced" if "report" in forced else
                              "no output yet" if manifest is None else "results change")
            if not (trainers_run or manifest is None or "report" in forced):
                status, reason = "skip", "up to date"
        else:
            upstream = []
            for up in UPSTREAM.get(step.stage, ()):
                if up == "make-corpus" and cfg.ingest.inputs:
                    continue
                path = storage.qualify(layout.stage_output(up, step.cfg))
                up_manifest, up_status = by_output.get(path, (read_manifest(path), "skip"))
                upstream.append((path, up_manifest, up_status))
            status, reason = _status(step, manifest, upstream, forced, hashes)
        by_output[output] = (manifest, status)
        rows = plan_.stage_rows(step.stage, manifest) if manifest else None
        rows = rows or _expected_rows(step, known)
        if step.stage in ("ingest", "prepare") and rows:
            known[step.stage] = rows
        seconds, basis = _seconds(step.stage, manifest, rows, rates, bench)
        out.append(PlannedStep(step.stage, step.cell, output, status, reason, rows,
                               seconds, basis))
    return out


def _seconds(stage: str, manifest: dict | None, rows: int | None,
             rates: dict[str, list[tuple[int, float]]], bench: dict) -> tuple[float | None, str]:
    if manifest and manifest.get("seconds"):
        return float(manifest["seconds"]), "its last run"
    if rows and rates.get(stage):
        done_rows = sum(r for r, _ in rates[stage])
        done_s = sum(s for _, s in rates[stage])
        return rows * done_s / done_rows, f"{stage} runs here"
    if rows and stage in bench:
        rate, source = bench[stage]
        return rows / rate, source
    return None, "no estimate"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_text(steps: list[PlannedStep]) -> str:
    """The plan as printed: one line per step, then the totals."""
    lines = []
    for i, s in enumerate(steps, 1):
        where = f"{s.stage} {s.cell}".strip()
        rows = f"{s.rows:,} rows" if s.rows else "- rows"
        if s.status == "skip":
            lines.append(f"{i:>3}. {where}: skip (up to date; {rows})")
        else:
            lines.append(f"{i:>3}. {where}: run ({s.reason}; {rows}; ≈ {_duration(s.seconds)}, "
                         f"{s.basis})")
    to_run = [s for s in steps if s.status == "run"]
    total = sum(s.seconds or 0 for s in to_run)
    unknown = sum(s.seconds is None for s in to_run)
    lines.append(f"[plan] {len(steps)} steps: {len(to_run)} to run, "
                 f"{len(steps) - len(to_run)} up to date; ≈ {_duration(total)}"
                 + (f" (+ {unknown} without an estimate)" if unknown else "")
                 + "; nothing was run")
    return "\n".join(lines)


def as_dicts(steps: list[PlannedStep]) -> list[dict[str, Any]]:
    return [dict(s.__dict__) for s in steps]
