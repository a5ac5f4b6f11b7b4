"""Raw amazon_reviews_us TSV (or McAuley JSON lines) → reviews Parquet + quarantine + manifest.

Input: `ingest.inputs` (default: the corpus). Output: <run.output_dir>/ingest/{reviews,quarantine}.

Run: spark-submit --py-files dist/starscale.zip jobs/ingest.py --conf conf/cluster.yaml [--set KEY=VALUE]
 or: python -m starscale ingest --conf conf/local.yaml [--set KEY=VALUE]
"""
from starscale.cli import job_main


def main(argv=None):
    return job_main("ingest", argv)


if __name__ == "__main__":
    main()
