"""Generate the synthetic amazon_reviews_us corpus.

Input: config `corpus.*`. Output: <run.output_dir>/corpus/part-*.tsv[.gz] (15 columns, header per part).

Run: spark-submit --py-files dist/starscale.zip jobs/make_corpus.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale make-corpus --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("make-corpus", argv)


if __name__ == "__main__":
    main()
