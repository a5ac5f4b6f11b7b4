"""Score a saved model on the test split: the study's score, accuracy, macro F1, bootstrap interval.

Input: a saved model + encode/<tag>. Output: a results row.

Run: spark-submit --py-files dist/starscale.zip jobs/evaluate.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale evaluate --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("evaluate", argv)


if __name__ == "__main__":
    main()
