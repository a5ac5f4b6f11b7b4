"""Command line: `python -m starscale <stage> [options]` and `spark-submit jobs/<stage>.py [options]`.

Parses arguments only: both reach pipeline.runner.run_stage, which runs the stage function
run(spark, cfg, force) in starscale.stages.<module>. Config is loaded and validated before a
SparkSession exists, so a bad key fails in a second.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from starscale import console
from starscale import spark as spark_session
from starscale.config import load_config
from starscale.pipeline.runner import STAGES, run_stage


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
    parser.add_argument("--verbose", action="store_true",
                        help="also show Spark's, TensorFlow's and the libraries' own output and "
                             "full tracebacks on the terminal (they always go to the run's log)")
    if stage == "experiment":
        parser.add_argument("--plan", action="store_true",
                            help="print the steps, which are up to date (skipped) and an estimate "
                                 "per step, then stop; starts no Spark job")
    return parser


def job_main(stage: str, argv: list[str] | None = None) -> dict:
    """Entry point of jobs/<stage>.py (spark-submit) and of `python -m starscale <stage>`."""
    args = _parser(stage).parse_args(argv)
    console.quiet_native_libraries(args.verbose)      # before anything imports TensorFlow
    deploy_error = spark_session.cluster_deploy_error(spark_session.submitted_conf())
    if deploy_error:
        print(f"starscale {stage}: {deploy_error}", file=sys.stderr)
        raise SystemExit(2)
    try:
        cfg = load_config(args.conf, args.overrides)
    except ValueError as exc:
        print(f"starscale {stage}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "plan", False):
        from starscale.pipeline import estimate
        print(estimate.plan_text(estimate.estimate(cfg, force_value(stage, args.force))))
        return {}
    run_log = console.open_run_log(stage, cfg.run.output_dir, args.verbose)
    print(f"[{stage}] log: {run_log.path}", flush=True)
    try:
        summary = run_stage(stage, cfg, force=force_value(stage, args.force))
    except (Exception, KeyboardInterrupt) as exc:      # noqa: BLE001 — every failure: one line
        console.LOGGER.error("starscale %s failed", stage, exc_info=exc)
        if args.verbose:
            traceback.print_exception(exc)
        interrupted = isinstance(exc, KeyboardInterrupt)
        line = (f"starscale {stage}: interrupted; log: {run_log.path}" if interrupted
                else console.error_line(stage, exc, run_log.path))
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(130 if interrupted else 1) from None
    finally:
        console.close_run_log()
    if stage != "experiment":            # the experiment prints its own table and report path
        print(json.dumps(_brief(summary), indent=2, default=str))
    return summary


def force_value(stage: str, force: bool | str) -> bool | str:
    """--force [STAGE]: bare or naming the command's own stage → True; another stage name only
    for the experiment (which recomputes that stage and what depends on it)."""
    if isinstance(force, bool) or force == stage:
        return bool(force)
    if stage == "experiment":
        from starscale.pipeline.plan import forced_stages
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
