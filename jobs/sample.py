"""Resample one ladder subset of the train split (validation/test are never resampled).

Input: <run.output_dir>/prepare. Output: <run.output_dir>/sample/<size>_<method>/train.

Run: spark-submit --py-files dist/starscale.zip jobs/sample.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale sample --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("sample", argv)


if __name__ == "__main__":
    main()
