"""experiment: the whole grid in one SparkSession, then the report.

make-corpus (only when ingest.inputs is empty) → ingest → prepare → per size of
experiment.sizes (null: ladder.sizes) per sampler: sample → per experiment.lr_features setting:
encode → LR per engine → the LSTM on the first setting's encode → report
(starscale.pipeline.plan). Every stage goes through its own run(), which skips when the
published manifest matches its config and inputs: adding a size or a sampler computes only the
new cells, and a killed experiment resumes where it stopped. force: False, True (bare --force:
every stage) or a stage name (that stage for every cell; the stages after it rerun because their
input fingerprints change).

Output: every stage's folder under <run.output_dir>, and <run.output_dir>/experiment with
summary.txt and _MANIFEST.json (starscale.pipeline.runner). Trained runs are logged to MLflow
(tracking.*) from the results rows, on the driver (starscale.pipeline.tracking).

Run: python -m starscale experiment --conf conf/local.yaml --conf conf/demo.yaml (make demo)
"""
from __future__ import annotations

from starscale.config import Config
from starscale.pipeline import runner


def run(spark, cfg: Config, force: bool | str = False) -> dict:
    """Run every step of the grid; return {report, verdict, steps, runs, ...}."""
    return runner.run_experiment(spark, cfg, force)
