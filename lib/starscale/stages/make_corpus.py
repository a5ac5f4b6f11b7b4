"""make-corpus: generate the synthetic amazon_reviews_us TSV corpus (the embedded default data).

Input: config `corpus.*` only. Output: <run.output_dir>/corpus/part-0000N[.gz], each a TSV file
with the 15-column header line, plus _MANIFEST.json with the counts of every dirt kind injected,
the written (valid) star counts, the rows of each part file and the file names.
The bytes of the part files depend on the corpus section only, not on corpus.partitions.
"""
from __future__ import annotations

import dataclasses

from starscale import corpus, storage
from starscale.config import Config

GZIP_CODEC = "org.apache.hadoop.io.compress.GzipCodec"


def params_of(cfg: Config) -> corpus.CorpusParams:
    """The generator's parameters from the corpus section."""
    ccfg = cfg.corpus
    return corpus.CorpusParams.make(ccfg.seed, ccfg.label_noise, ccfg.star_mix,
                                    dataclasses.asdict(ccfg.dirt))


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Generate corpus.rows reviews into cfg.stage_dir('corpus'); return the summary."""
    ccfg = cfg.corpus
    params = params_of(cfg)
    sc = spark.sparkContext

    def write(staging: str) -> dict:
        lines = corpus.corpus_text_rdd(sc, params, ccfg.rows, ccfg.partitions, ccfg.part_files)
        if ccfg.gzip:
            # Hadoop's GzipCodec writes a fixed gzip header (mtime 0), so the bytes are the
            # same run to run; see docs/corpus.md for the codec caveat across Hadoop builds.
            lines.saveAsTextFile(staging, compressionCodecClass=GZIP_CODEC)
        else:
            lines.saveAsTextFile(staging)
        stats = corpus.compute_corpus_stats(sc, params, ccfg.rows, ccfg.partitions)
        if stats["rows"] != ccfg.rows:
            raise RuntimeError(f"make-corpus: generated {stats['rows']} rows, expected {ccfg.rows}")
        suffix = ".gz" if ccfg.gzip else ""
        files = [f"part-{p:05d}{suffix}" for p in range(ccfg.part_files)]
        found = sorted(path.rsplit("/", 1)[-1] for path, _, _ in storage.list_files(spark, staging))
        if found != files:
            raise RuntimeError(f"make-corpus: wrote {found} into {staging}, expected {files}")
        return {
            **stats,
            "files": files,
            "part_rows": corpus.part_rows(ccfg.rows, ccfg.part_files),
            "header": list(corpus.COLUMNS),
            "gzip": ccfg.gzip,
            "block_rows": corpus.BLOCK_ROWS,
            "generator_version": corpus.GENERATOR_VERSION,
            "vocabulary_words": len(corpus.vocabulary()),
        }

    return storage.run_stage(
        spark, stage="make-corpus", output=cfg.stage_dir("corpus"),
        config_hash=cfg.section_hash("corpus"),
        config={"corpus": dataclasses.asdict(ccfg)}, force=force, write=write)
