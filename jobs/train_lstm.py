"""The LSTM trained with Horovod across workers, each streaming its own Parquet shard.

Input: encode/<tag>. Output: <run.output_dir>/models/lstm/<tag> and a results row.

Run: spark-submit --py-files dist/starscale.zip jobs/train_lstm.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale train-lstm --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("train-lstm", argv)


if __name__ == "__main__":
    main()
