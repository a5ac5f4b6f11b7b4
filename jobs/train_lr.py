"""Logistic-regression baseline (Spark MLlib or scikit-learn) on the TF-IDF features.

Input: encode/<tag>. Output: <run.output_dir>/models/lr_<engine>/<tag> and a results row.

Run: spark-submit --py-files dist/starscale.zip jobs/train_lr.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale train-lr --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("train-lr", argv)


if __name__ == "__main__":
    main()
