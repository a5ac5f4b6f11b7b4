"""Clean the text, drop duplicate texts, split train/validation/test, rank train for the ladder.

Input: <run.output_dir>/ingest. Output: <run.output_dir>/prepare/{reviews,quarantine}.

Run: spark-submit --py-files dist/starscale.zip jobs/prepare.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale prepare --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("prepare", argv)


if __name__ == "__main__":
    main()
