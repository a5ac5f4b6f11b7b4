"""Stage ingest: raw amazon_reviews_us TSV (or its Parquet edition) or McAuley JSON lines →
ingest/{reviews,quarantine}.

Input: ``ingest.inputs`` (files, folders, globs, read in the order given, each pattern's files
sorted by path; a file named twice is read once) or, when empty, the make-corpus output.
Output: ``<run.output_dir>/ingest`` with ``reviews/`` and ``quarantine/`` (docs/tables.md) and a
manifest holding, per file and in total, lines read, header lines, accepted rows and rejected
rows by reason. Rules: starscale.ingest.

Before any job the driver reads line 1 of each TSV file (the header check). Jobs: (1) one pass
that counts the lines of every split (a tiny result that gives exact line numbers); (2) parse
and classify every line once, keeping the rows on local disk (DISK_ONLY: not in the heap), and
find the review_ids that accepted rows carry more than once (a hash aggregate of narrow
columns); (3, 4) mark duplicates and write each table into the staging folder; (5) count
outcomes from the written tables. The checks (line identity, rejected share)
run on those counts before publishing; a failed check raises ValueError, the staging folder is
deleted and nothing is published. No wide row is cached or shuffled, so the driver's memory
does not grow with the input.
"""
from __future__ import annotations

import dataclasses
from urllib.parse import unquote

from pyspark import StorageLevel

from starscale import ingest, joins, partitions, storage
from starscale.config import Config


def resolve_inputs(spark, patterns: list[str]) -> list[str]:
    """Files named by the patterns, in pattern order (sorted within one), each once."""
    files: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        found = storage.list_files(spark, pattern)
        if not found:
            raise ValueError(f"ingest input not found or empty: {pattern}")
        for path, _, _ in found:
            if path not in seen:
                seen.add(path)
                files.append(path)
    return files


def first_line(spark, path: str) -> str | None:
    """Line 1 of a file (decompressed by its extension, at most FIRST_LINE_BYTES, trailing CR
    dropped), or None when the file has no bytes. Reads only the start of the file."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    stream = jpath.getFileSystem(conf).open(jpath)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(jpath)
        if codec is not None:
            stream = codec.createInputStream(stream)
        text = jvm.org.apache.hadoop.io.Text()
        size = jvm.org.apache.hadoop.util.LineReader(stream).readLine(
            text, ingest.FIRST_LINE_BYTES, ingest.FIRST_LINE_BYTES)
        return text.toString() if size > 0 else None
    finally:
        stream.close()


# What Hadoop's codecs raise on a truncated or damaged compressed file.
CODEC_ERRORS = ("EOFException", "Unexpected end of input stream", "ZipException",
                "Not in GZIP format", "invalid block type", "invalid distance",
                "invalid stored block", "incorrect header check", "CRC", "premature EOF")


def find_broken_compressed(spark, files: list[str]) -> tuple[str, str] | None:
    """(path, error) of the first compressed file in files that does not decompress to its
    end, read through Hadoop's codec the way Spark reads it; None when all do. Called only
    after a job failed: it reads every compressed file once."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    factory = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf)
    for path in files:
        jpath = jvm.org.apache.hadoop.fs.Path(path)
        codec = factory.getCodec(jpath)
        if codec is None:
            continue
        stream = jpath.getFileSystem(conf).open(jpath)
        try:
            jvm.org.apache.commons.io.IOUtils.consume(codec.createInputStream(stream))
        except Exception as exc:                 # noqa: BLE001 - a py4j error from the codec
            lines = str(exc).strip().splitlines()
            cause = next((ln.strip() for ln in lines if "Exception" in ln and ":" in ln),
                         lines[-1] if lines else type(exc).__name__)
            return path, cause
        finally:
            stream.close()
    return None


def compressed_input_error(spark, files: list[str], exc: BaseException) -> ValueError | None:
    """A one-line ValueError naming the broken file when exc is a codec failure, else None."""
    if not any(marker in str(exc) for marker in CODEC_ERRORS):
        return None
    broken = find_broken_compressed(spark, files)
    if broken is None:
        return None
    path, cause = broken
    return ValueError(f"{path}: truncated or corrupt compressed file ({cause[:200]}); "
                      f"nothing was published")


def check_headers(spark, files: list[str]) -> None:
    """ValueError naming the first file that is empty or whose line 1 is not the TSV header."""
    for path in files:
        first = first_line(spark, path)
        if first is None:
            raise ValueError(f"{path}: empty input file (no lines)")
        if first.lstrip("\ufeff") != ingest.TSV_HEADER:
            raise ValueError(
                f"{path}: line 1 is not the amazon_reviews_us header; expected "
                f"{ingest.TSV_HEADER!r}, found {first[:300]!r}")


def build_classified(spark, files: list[str], fmt: str):
    """Files → (classified DataFrame, lines per file). Checks that every TSV file starts with the
    header (reading only line 1), then runs job 1 (per-split line counts, a tiny result)."""
    if fmt == "tsv":
        check_headers(spark, files)
    if fmt == "parquet":        # the Parquet edition: each row as the TSV line it would be
        lines = ingest.tag_lines(ingest.parquet_lines(spark.read.parquet(*files)))
    else:
        lines = ingest.tag_lines(ingest.read_raw_lines(spark, files))
    order = {path: i for i, path in enumerate(files)}
    stats = []
    for row in ingest.split_stats(lines).collect():
        # _metadata.file_path is URI-encoded (a space is %20); listings give the plain path.
        path = unquote(row["file_path"])
        if path not in order:
            raise ValueError(f"Spark read a file outside the input list: {row['file_path']}")
        stats.append({**row.asDict(), "source_file": path, "file_order": order[path]})
    lines_per_file: dict[str, int] = {}
    for row in stats:
        path = row["source_file"]
        lines_per_file[path] = lines_per_file.get(path, 0) + row["lines"]
    for path in files:
        if not lines_per_file.get(path):
            raise ValueError(f"{path}: empty input file (no lines)")
    offsets = spark.createDataFrame(
        [tuple(r[f.name] for f in ingest.OFFSETS_SCHEMA.fields)
         for r in ingest.line_offsets(stats)],
        ingest.OFFSETS_SCHEMA)
    numbered = ingest.number_lines(lines, offsets)
    classified = (ingest.classify_jsonl(numbered) if fmt == "jsonl"
                  else ingest.classify_tsv(numbered))
    return classified, lines_per_file


def build_outcomes(spark, files: list[str], fmt: str):
    """Files → (outcomes, kept, lines per file). The lines are parsed once: the classified rows
    are kept on local disk (never in the heap) while the table of review_ids seen twice is
    computed from them; outcomes joins the two lazily. Unpersist every frame in kept."""
    classified, lines_per_file = build_classified(spark, files, fmt)
    classified = classified.persist(StorageLevel.DISK_ONLY)
    # a few rows per repeated id: as many partitions as the session has cores, not 200
    repeated = partitions.persist_coalesced(ingest.first_occurrences(classified),
                                            spark.sparkContext.defaultParallelism)
    n_repeated = repeated.count()
    marked = ingest.mark_duplicates(classified, repeated,
                                    broadcast=joins.broadcast_ok(n_repeated))
    outcomes = ingest.finish_jsonl(marked) if fmt == "jsonl" else ingest.finish_tsv(marked)
    return outcomes, (classified, repeated), lines_per_file


def ingest_files(spark, files: list[str], fmt: str, max_rejected_share: float,
                 output: str) -> dict:
    """Read, write and check files → output/{reviews,quarantine}; returns the counts. Raises
    ValueError (the caller deletes output) when a check fails."""
    outcomes, kept, lines_per_file = build_outcomes(spark, files, fmt)
    try:
        ingest.reviews_of(outcomes).write.parquet(output + "/reviews")
        ingest.quarantine_of(outcomes).write.parquet(output + "/quarantine")
    finally:
        for frame in kept:
            frame.unpersist()
    counts = ingest.compute_outcome_counts(
        spark.read.parquet(output + "/reviews"), spark.read.parquet(output + "/quarantine"),
        header_files=files if fmt == "tsv" else [])
    summary = ingest.build_manifest(files, lines_per_file, counts, max_rejected_share,
                                    expect_header=fmt == "tsv")
    return {"format": fmt, **summary}


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Publish <output_dir>/ingest from ingest.inputs (or the corpus); returns the manifest."""
    settings = cfg.ingest
    if settings.inputs:
        patterns, upstream, raw_inputs = list(settings.inputs), None, list(settings.inputs)
    else:
        corpus = cfg.stage_dir("corpus")
        patterns, upstream, raw_inputs = [corpus], {corpus: "make-corpus"}, None

    def write(staging: str) -> dict:
        files: list[str] = []
        try:
            # the corpus is a published folder: its files are where its manifest points
            files = resolve_inputs(spark, [storage.data_dir(spark, p) if upstream else p
                                           for p in patterns])
            return ingest_files(spark, files, settings.format, settings.max_rejected_share,
                                staging)
        except Exception as exc:
            storage.delete(spark, staging)   # nothing half-written stays behind
            named = compressed_input_error(spark, files, exc) if files else None
            if named is not None:
                raise named from None        # one line naming the file, not a JVM trace
            raise

    return storage.run_stage(
        spark, stage="ingest", output=cfg.stage_dir("ingest"),
        config_hash=cfg.section_hash("ingest"),
        config={"ingest": dataclasses.asdict(settings)},
        upstream=upstream, raw_inputs=raw_inputs, force=force, write=write)
