"""report: learning curves, sampler comparison and the LSTM-vs-LR verdict as a static folder.

Input: <run.output_dir>/results (results.parquet + predictions/, written by the trainers through
starscale.results) and every stage manifest found under <run.output_dir> (ingest, prepare,
sample/<tag>, encode/<tag>, ...; each optional). Nothing is recomputed: the report reads only the
results table, saved predictions and manifests.
Output: <run.output_dir>/report/{index.html, report.md, *.png, verdict.json} + _MANIFEST.json.

Up-to-date check: the results folder has no manifest (it is appended to, not published), so its
files are fingerprinted by path, size, modification time and a hash of their first and last
MiB (storage.raw_fingerprints: a new results row or predictions file changes it). The manifests read are folded into config_hash
together with the whole resolved config (the report shows it), so a rerun after any new run,
stage output or config change rebuilds the report, and otherwise skips.
"""
from __future__ import annotations

import hashlib
import json

from starscale import layout, report, results, storage, verdict
from starscale.config import Config

# experiment/ is rewritten by every experiment run (it records which stages skipped): reading it
# would make the report rerun every time. mlruns/ is the MLflow store, not a stage.
SKIP_FOLDERS = ("report", "results", "experiment", "mlruns")
MAX_DEPTH = 3          # models/<family>/<tag> is the deepest published folder


def collect_manifests(spark, output_dir: str) -> dict[str, dict]:
    """{folder relative to output_dir: manifest} of every published stage folder.

    A folder with a manifest is a stage output (not descended into); others are searched up to
    MAX_DEPTH levels (sample/<tag>, models/lr_mllib/<tag>).
    """
    found: dict[str, dict] = {}

    def walk(rel: str, depth: int) -> None:
        for name in storage.list_dirs(spark, layout.join(output_dir, rel) if rel else output_dir):
            child = f"{rel}/{name}" if rel else name
            if not rel and name in SKIP_FOLDERS:
                continue
            manifest = storage.read_manifest(spark, layout.join(output_dir, child))
            if manifest is not None:
                found[child] = manifest
            elif depth < MAX_DEPTH:
                walk(child, depth + 1)

    walk("", 1)
    return found


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Build <run.output_dir>/report; return the manifest plus the verdict and the page paths."""
    rcfg = cfg.report
    results_dir = layout.results_dir(cfg)
    output = layout.report_dir(cfg)
    if not storage.exists(spark, layout.join(results_dir, results.RESULTS_PARQUET)):
        raise ValueError(f"report: no results table at {results_dir}/{results.RESULTS_PARQUET}: "
                         f"run train-lr / train-lstm (or evaluate) first")
    manifests = collect_manifests(spark, cfg.run.output_dir)
    blob = json.dumps({"config": cfg.to_dict(),
                       "manifests": {k: storage.fingerprint(m) for k, m in manifests.items()}},
                      sort_keys=True, default=str)
    config_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    cache: dict[tuple[str, str], object] = {}

    def load_predictions(run_id: str, split: str = "test"):
        if (run_id, split) not in cache:
            cache[(run_id, split)] = results.read_predictions(results_dir, run_id, split)
        return cache[(run_id, split)]

    def write(staging: str) -> dict:
        built = report.build_report(
            results.read_results(results_dir), load_predictions, manifests=manifests,
            config=cfg.to_dict(), versions=storage.versions(),
            plateau_min_gain=rcfg.plateau_min_gain, bootstrap=rcfg.bootstrap, seed=rcfg.seed,
            alpha=rcfg.alpha, include_study_points=rcfg.include_study_points,
            sampling_at=rcfg.sampling_size, title=f"starscale report: {cfg.run.name}",
            margin=rcfg.margin, decide_on=rcfg.decide_on)
        for name, data in sorted(built.files.items()):
            storage.write_bytes(layout.join(staging, name), data)
        return {"verdict": built.sentences, "primary": verdict.jsonable(built.primary),
                "comparisons": [{k: verdict.jsonable(v) for k, v in comp.items()
                                 if k not in ("sentence", "offset_fits")}
                                for comp in built.verdicts],
                "plateaus": [{k: v for k, v in p.items() if k != "segments"}
                             for p in built.plateaus],
                "files": sorted(built.files),
                "runs": int(len(results.read_results(results_dir))),
                "manifests_read": sorted(manifests)}

    published = storage.run_stage(
        spark, stage="report", output=output, config_hash=config_hash,
        config=cfg.to_dict(), raw_inputs=[results_dir], force=force,
        write=write)
    pages = storage.resolve(output, published)      # the version folder on object stores
    return {**published, "index_html": layout.join(pages, report.INDEX_HTML),
            "report_md": layout.join(pages, report.REPORT_MD)}
