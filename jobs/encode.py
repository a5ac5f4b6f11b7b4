"""Vocabulary, padded token-id shards (one per Horovod worker) and TF-IDF features, fit on train.

Input: prepare + sample/<tag>. Output: <run.output_dir>/encode/<tag>.

Run: spark-submit --py-files dist/starscale.zip jobs/encode.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale encode --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("encode", argv)


if __name__ == "__main__":
    main()
