"""The whole experiment: ingest → prepare → for each ladder size × sampler: sample → encode →
LR and LSTM → evaluate → report, skipping every stage whose published manifest is current.

Input: `ingest.inputs` (or the synthetic corpus). Output: every stage under <run.output_dir>,
the results table and <run.output_dir>/report/index.html.

Run: spark-submit --py-files dist/starscale.zip jobs/experiment.py --conf conf/cluster.yaml
 or: python -m starscale experiment --conf conf/local.yaml --conf conf/demo.yaml
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("experiment", argv)


if __name__ == "__main__":
    main()
