"""Learning curves, sampler comparison and the LSTM-vs-LR verdict as a static report.

Input: <run.output_dir>/results (results.parquet + predictions/) and the stages' manifests.
Output: <run.output_dir>/report/{index.html, report.md, *.png, verdict.json} + manifest.

Run: spark-submit --py-files dist/starscale.zip jobs/report.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale report --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("report", argv)


if __name__ == "__main__":
    main()
