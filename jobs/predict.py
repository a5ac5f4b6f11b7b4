"""Batch scoring of a reviews table or raw TSV with a saved model, inside Spark.

Input: a saved model + reviews. Output: predictions Parquet.

Run: spark-submit --py-files dist/starscale.zip jobs/predict.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale predict --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("predict", argv)


if __name__ == "__main__":
    main()
