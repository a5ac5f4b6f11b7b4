"""Command line: `python -m starscale <stage> [options]` and `spark-submit jobs/<stage>.py [options]`.

Both reach the same stage function run(spark, cfg, force) in starscale.stages.<module>.
Config is loaded and validated before a SparkSession exists, so a bad key fails in a second.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time

from starscale.config import Config, load_config

# stage name → (module under starscale.stages, one-line description)
STAGES: dict[str, tuple[str, str]] = {
    "make-corpus": ("make_corpus", "generate a synthetic amazon_reviews_us TSV corpus"),
    "ingest": ("ingest", "raw TSV / JSON lines → reviews Parquet + quarantine + manifest"),
    "prepare": ("prepare", "clean text, dedupe, split train/validation/test, ladder ranks"),
    "sample": ("sample", "resample the train split (under/over/class weights/adasyn)"),
    "encode": ("encode", "vocabulary + token-id shards and TF-IDF features, fit on train"),
    "train-lr": ("train_lr", "logistic-regression baseline (MLlib or scikit-learn) on TF-IDF"),
    "train-lstm": ("train_lstm", "the LSTM with Horovod, each worker streaming its shard"),
    "evaluate": ("evaluate", "score a saved model on the test split, append a results row"),
    "experiment": ("experiment", "the whole grid: sizes × samplers × models, then the report"),
    "predict": ("predict", "batch-score reviews with a saved model inside Spark"),
    "report": ("report", "learning curves, sampling comparison, verdict → report/index.html + report.md"),
}


def _parser(stage: str | None = None) -> argparse.ArgumentParser:
    stages = "\n".join(f"  {name:<12} {desc}" for name, (_, desc) in STAGES.items())
    parser = argparse.ArgumentParser(
        prog=f"starscale {stage}" if stage else "starscale",
        description="starscale pipeline stages" + ("" if stage else f"\n\nstages:\n{stages}"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    if stage is None:
        parser.add_argument("stage", choices=sorted(STAGES), metavar="STAGE",
                            help="one of: " + ", ".join(STAGES))
    parser.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="YAML overlay on conf/base.yaml; repeatable, later wins")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set corpus.rows=1000; repeatable")
    parser.add_argument("--force", nargs="?", const=True, default=False, metavar="STAGE",
                        help="recompute even when the published output's manifest matches; "
                             "`experiment --force STAGE` recomputes STAGE for every cell (and "
                             "what depends on it), bare --force every stage")
    return parser


def run_stage(stage: str, cfg: Config, force: bool = False, spark=None) -> dict:
    """Import the stage, build (or reuse) the session, run it and return its summary."""
    module = importlib.import_module(f"starscale.stages.{STAGES[stage][0]}")
    if spark is None:
        from starscale.spark import build_session
        # A stage may ask for session settings (the experiment: console progress); config wins.
        defaults = getattr(module, "SPARK_CONF_DEFAULTS", {})
        spark_cfg = dataclasses.replace(cfg.spark, conf={**defaults, **cfg.spark.conf})
        spark = build_session(spark_cfg, stage)
    started = time.time()
    summary = module.run(spark, cfg, force=force)
    summary = {"stage": stage, "wall_seconds": round(time.time() - started, 2), **summary}
    return summary


def job_main(stage: str, argv: list[str] | None = None) -> dict:
    """Entry point of jobs/<stage>.py (spark-submit) and of `python -m starscale <stage>`."""
    args = _parser(stage).parse_args(argv)
    try:
        cfg = load_config(args.conf, args.overrides)
    except ValueError as exc:
        print(f"starscale {stage}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = run_stage(stage, cfg, force=force_value(stage, args.force))
    if stage != "experiment":            # the experiment prints its own table and report path
        print(json.dumps(_brief(summary), indent=2, default=str))
    return summary


def force_value(stage: str, force: bool | str) -> bool | str:
    """--force [STAGE]: bare or naming the command's own stage → True; another stage name only
    for the experiment (which recomputes that stage and what depends on it)."""
    if isinstance(force, bool) or force == stage:
        return bool(force)
    if stage == "experiment":
        from starscale.experiment import forced_stages
        forced_stages(force)             # ValueError for a name that is no stage of it
        return force
    raise ValueError(f"--force {force}: `{stage}` can only force itself (bare --force); "
                     f"use `experiment --force {force}` to recompute {force} and its dependents")


def _brief(summary: dict) -> dict:
    """The summary without the bulky parts (resolved config, input fingerprints)."""
    return {k: v for k, v in summary.items() if k not in ("config", "inputs", "versions")}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        _parser().print_help()
        raise SystemExit(0 if argv else 2)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"starscale: unknown stage {stage!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        raise SystemExit(2)
    try:
        job_main(stage, rest)
    except ValueError as exc:
        print(f"starscale {stage}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
