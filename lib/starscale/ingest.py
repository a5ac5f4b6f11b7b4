"""Raw review lines → typed reviews + quarantine, with exact 1-based line numbers per file.

Pure DataFrame functions; the stage (starscale.stages.ingest) lists files, reads them as text
lines, collects the tiny per-split aggregates and writes the tables. The flow:

    tag_lines(spark.read.text(files, lineSep="\\n"))     value, file_path, block_start, row_id
      (Parquet edition: tag_lines(parquet_lines(spark.read.parquet(*files))), rows as lines)
    split_stats(lines)                                   one row per (file, split): tiny
    line_offsets(stats)                                  driver: lines before each split
    number_lines(lines, offsets)                         source_file, file_order, line_no, value
    classify_tsv(numbered) | classify_jsonl(numbered)    typed columns + reason/detail/raw
    first_occurrences(classified)                        review_ids seen twice: narrow, small
    mark_duplicates(classified, repeated, broadcast)     a join with that small table
    finish_tsv(...) / finish_jsonl(...)                  outcomes
    reviews_of(outcomes), quarantine_of(outcomes)        the two published tables
    outcome_counts(reviews, quarantine)                  from the written tables: tiny

No wide row is shuffled or cached: the only shuffle aggregates (review_id, file order, line)
of the accepted rows, and the wide rows meet the (usually tiny) duplicate table through a
broadcast. That keeps ingest's memory independent of the input's size (issue 14: the window
over a persisted frame of whole lines ran a 4g driver out of heap at 9M rows).

Rules (each line gets exactly one outcome; the first rule that applies wins):

- ``header``: TSV line 1 equal to the 15-column header (a leading BOM and a trailing CR are
  tolerated). Counted, never written. The stage checks every file's line 1 before any Spark job.
- ``repeated_header``: TSV line after line 1 equal to the header (files joined with ``cat``).
- ``unreadable_bytes``: the line is not valid UTF-8 (the quarantined raw shows U+FFFD).
- ``control_chars``: the line (TSV) or the review text or headline (JSON, after unescaping)
  holds a C0 control character other than tab, LF and CR, or DEL: NUL bytes and the like are
  quarantined, not stripped, so no accepted text differs from its source.
- ``field_count`` (TSV): splitting on every tab (no quoting: a body may start with ``"``) does not
  give exactly 15 fields. A stray tab gives 16; a body broken by a newline gives two short lines.
  A single trailing CR (CRLF files) is removed before splitting.
- ``bad_json`` (JSON lines): the line is not one JSON object (blank lines included).
- ``missing_review_id``: TSV review_id is empty; JSON: user or asin is missing, so no id.
- ``bad_star``: the rating must match ``^[1-5](\\.0+)?$``: ``5`` and integral decimal forms such
  as ``5.0`` (McAuley JSON writes ``5.0``) are accepted as 5; ``0``, ``6``, ``''``, ``five``,
  ``4.5``, `` 5`` are rejected.
- ``empty_body``: the body is empty or only whitespace.
- ``bad_date``: TSV ``review_date`` must be a real calendar date written ``yyyy-MM-dd``; JSON
  dates come from ``timestamp`` (ms, 2023), ``unixReviewTime`` (s) or ``reviewTime``
  (``MM dd, yyyy``), as UTC dates.
- ``duplicate_review_id``: among rows that passed every rule above, the first occurrence of a
  review_id by (input file order, line number) is kept; later ones are quarantined, their detail
  names the kept row.

JSON review_id: the first 20 hex digits of SHA-256 of ``user \\x1f asin \\x1f time`` where user is
``reviewerID`` (2014/2018) or ``user_id`` (2023) and time is ``timestamp`` (2023, ms),
``unixReviewTime`` or ``reviewTime`` as written in the record.

Non-integer vote counts become null (they are not used for modelling), never a rejection.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

TSV_COLUMNS = ("marketplace", "customer_id", "review_id", "product_id", "product_parent",
               "product_title", "product_category", "star_rating", "helpful_votes",
               "total_votes", "vine", "verified_purchase", "review_headline", "review_body",
               "review_date")
TSV_HEADER = "\t".join(TSV_COLUMNS)

HEADER = "header"             # pseudo-reason of header lines: counted, never written
STAR_PATTERN = r"^[1-5](\.0+)?$"

REVIEWS_SCHEMA = T.StructType([
    T.StructField("review_id", T.StringType()),
    T.StructField("star", T.IntegerType()),
    T.StructField("body", T.StringType()),
    T.StructField("headline", T.StringType()),
    T.StructField("product_id", T.StringType()),
    T.StructField("product_parent", T.StringType()),
    T.StructField("product_title", T.StringType()),
    T.StructField("product_category", T.StringType()),
    T.StructField("customer_id", T.StringType()),
    T.StructField("marketplace", T.StringType()),
    T.StructField("helpful_votes", T.IntegerType()),
    T.StructField("total_votes", T.IntegerType()),
    T.StructField("vine", T.StringType()),
    T.StructField("verified_purchase", T.StringType()),
    T.StructField("review_date", T.DateType()),
    T.StructField("source_file", T.StringType()),
    T.StructField("line_no", T.LongType()),
])
QUARANTINE_SCHEMA = T.StructType([
    T.StructField("source_file", T.StringType()),
    T.StructField("line_no", T.LongType()),
    T.StructField("review_id", T.StringType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detail", T.StringType()),
    T.StructField("raw", T.StringType()),
])
OFFSETS_SCHEMA = T.StructType([
    T.StructField("file_path", T.StringType()),
    T.StructField("block_start", T.LongType()),
    T.StructField("source_file", T.StringType()),
    T.StructField("file_order", T.IntegerType()),
    T.StructField("first_row_id", T.LongType()),
    T.StructField("line_offset", T.LongType()),
])
# Every JSON field read as a string: a number or a nested value in an unexpected place then
# never makes Spark's parser give up on the whole record.
JSON_FIELDS = ("overall", "rating", "reviewText", "text", "summary", "title", "reviewerID",
               "user_id", "asin", "parent_asin", "unixReviewTime", "reviewTime", "timestamp",
               "helpful", "vote", "helpful_vote", "verified", "verified_purchase")
JSON_SCHEMA = T.StructType([T.StructField(n, T.StringType()) for n in JSON_FIELDS]
                           + [T.StructField("_corrupt_record", T.StringType())])

# C0 controls except tab, LF, CR; and DEL (Java regex).
CONTROL_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"

FIRST_LINE_BYTES = 4096       # enough for any header; bounds what the header check reads


# --------------------------------------------------------------------------- the raw reader
def read_raw_lines(spark, paths) -> DataFrame:
    """Raw files (plain or compressed, by extension) → one row per line in ``value``, split on
    LF only: a stray CR stays inside its line. The one reader of raw review files: ingest and
    predict both read through it (with tsv_text and is_tsv_header below)."""
    return spark.read.text(paths, lineSep="\n")


def tsv_text(value: Column) -> Column:
    """A raw TSV line without its single trailing CR (CRLF files)."""
    return F.when(value.endswith("\r"), value.substr(F.lit(1), F.length(value) - 1)) \
        .otherwise(value)


def is_tsv_header(text: Column) -> Column:
    """The line (tsv_text) is the 15-column header, a leading BOM tolerated."""
    return F.regexp_replace(text, "^\ufeff", "") == TSV_HEADER


# --------------------------------------------------------------------------- line numbers
def tag_lines(text_lines: DataFrame) -> DataFrame:
    """spark.read.text output → value, file_path, block_start, row_id.

    row_id (monotonically_increasing_id) is consecutive inside each split, because a task reads
    its splits one after another; with the split's first row_id and the lines in earlier splits
    of the same file it gives the line number without a shuffle.
    """
    return text_lines.select(
        F.col("value"),
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("row_id"),
    )


def parquet_lines(rows: DataFrame) -> DataFrame:
    """Rows of the amazon_reviews_us Parquet edition → value, _metadata for tag_lines.

    Each row becomes the line the TSV edition would hold: the 15 TSV columns as strings (dates
    yyyy-MM-dd, null as empty), joined by tabs; product_category is the column when the files
    have it, else the ``product_category=<name>`` partition folder. classify_tsv then applies
    every TSV rule unchanged (a tab inside a field is field_count, as it is in the TSV; a null
    star is bad_star, a null body empty_body), and line_no is the row's 1-based position in its
    file, so lines = accepted + rejected holds per file as for text. Extra columns (year) are
    ignored; a missing one is a ValueError.
    """
    names = set(rows.columns)
    missing = [c for c in TSV_COLUMNS if c not in names and c != "product_category"]
    if missing:
        raise ValueError(f"Parquet input lacks the amazon_reviews_us columns {missing}; found "
                         f"{sorted(names)}")
    from_path = F.regexp_extract(F.col("_metadata.file_path"), r"product_category=([^/]+)", 1)
    category = (F.coalesce(F.col("product_category").cast("string"), from_path)
                if "product_category" in names else from_path)

    def text(name: str) -> Column:
        column = category if name == "product_category" else F.col(name).cast("string")
        return F.coalesce(column, F.lit(""))      # concat_ws would drop a null, not keep a field

    return rows.select(F.concat_ws("\t", *[text(c) for c in TSV_COLUMNS]).alias("value"),
                       F.col("_metadata"))


def split_stats(lines: DataFrame) -> DataFrame:
    """One row per (file_path, block_start): lines and first_row_id. Fixed-width buffers only,
    so Spark aggregates with a hash map (no sort of the lines)."""
    return (lines.groupBy("file_path", "block_start")
            .agg(F.count(F.lit(1)).alias("lines"), F.min("row_id").alias("first_row_id")))


def line_offsets(stats: list[dict]) -> list[dict]:
    """Per split (dicts with file_path, block_start, lines, ...): add line_offset, the number of
    lines in the earlier splits of the same file. Splits without lines never appear, and add 0."""
    out, seen = [], {}
    for row in sorted(stats, key=lambda r: (r["file_path"], r["block_start"])):
        before = seen.get(row["file_path"], 0)
        out.append({**row, "line_offset": before})
        seen[row["file_path"]] = before + row["lines"]
    return out


def number_lines(lines: DataFrame, offsets: DataFrame) -> DataFrame:
    """Tagged lines + OFFSETS_SCHEMA rows → source_file, file_order, line_no (1-based), value."""
    return (lines.join(F.broadcast(offsets), on=["file_path", "block_start"], how="inner")
            .select(F.col("source_file"), F.col("file_order"),
                    (F.col("line_offset") + F.col("row_id") - F.col("first_row_id") + 1)
                    .alias("line_no"),
                    F.col("value")))


# --------------------------------------------------------------------------- helpers
def _unreadable(value: Column) -> Column:
    # Spark keeps a text line's bytes as read; encode() goes through a Java String, which turns
    # invalid UTF-8 into U+FFFD, so the two byte strings differ exactly when the line is invalid.
    return F.encode(value, "UTF-8") != value.cast("binary")


def _decoded(value: Column) -> Column:
    """The line as valid UTF-8 (invalid bytes → U+FFFD), safe to write to Parquet."""
    return F.decode(value.cast("binary"), "UTF-8")


def _calendar_date(y: Column, m: Column, d: Column) -> Column:
    """make_date only for real dates (null otherwise, also under ANSI mode)."""
    valid = ((y >= 1) & (m >= 1) & (m <= 12) & (d >= 1)
             & (d <= F.dayofmonth(F.last_day(F.make_date(y, m, F.lit(1))))))
    return F.when(valid, F.make_date(y, m, d))


def _iso_date(text: Column) -> Column:
    """yyyy-MM-dd → date, else null."""
    return F.when(text.rlike(r"^\d{4}-\d{2}-\d{2}$"), _calendar_date(
        F.substring(text, 1, 4).cast("int"), F.substring(text, 6, 2).cast("int"),
        F.substring(text, 9, 2).cast("int")))


def _star(text: Column) -> Column:
    return F.when(text.rlike(STAR_PATTERN), F.substring(text, 1, 1).cast("int"))


def _int_or_null(text: Column) -> Column:
    return F.when(text.rlike(r"^\d{1,9}$"), text.cast("int"))


def _is_blank(text: Column) -> Column:
    return text.isNull() | text.rlike(r"^\s*$")


def _control_detail(text: Column) -> Column:
    return F.format_string("control character (C0 or DEL) at column %d",
                           F.regexp_instr(text, F.lit(CONTROL_CHARS)))


def _first_rule(rules: list[tuple[Column, str, Column]]) -> tuple[Column, Column]:
    """(reason, detail) of the first (condition, reason, detail) rule that holds; null if none."""
    reason = detail = None
    for cond, name, text in rules:
        reason = F.when(cond, F.lit(name)) if reason is None else reason.when(cond, F.lit(name))
        detail = F.when(cond, text) if detail is None else detail.when(cond, text)
    return reason, detail


def _quoted(name: str, value: Column) -> Column:
    return F.format_string(f"{name} '%s'", F.substring(value, 1, 100))


# --------------------------------------------------------------------------- TSV
def classify_tsv(numbered: DataFrame) -> DataFrame:
    """Numbered amazon_reviews_us lines → review columns + reason/detail/raw (+ _ columns).

    raw is filled for rows rejected here; every row keeps its line as ``_line``, which
    finish_tsv turns into the raw of a duplicate (a duplicate passed every check, so its bytes
    are valid UTF-8 and the line is its raw exactly). Writers that do not select raw never
    read ``_line``, so the reviews table does not pay for it.
    """
    text = tsv_text(F.col("value"))
    header_text = is_tsv_header(text)
    is_header = (F.col("line_no") == 1) & header_text
    parts = (numbered
             .withColumn("_fields", F.split(text, "\t", -1))
             .withColumn("_n", F.size("_fields"))
             .withColumn("_header", is_header)
             .withColumn("_repeated_header", (F.col("line_no") > 1) & header_text)
             .withColumn("_ctrl", text.rlike(CONTROL_CHARS))
             .withColumn("_bad_bytes", _unreadable(F.col("value"))))
    field = {name: F.when(F.col("_n") == 15, F.col("_fields").getItem(i))
             for i, name in enumerate(TSV_COLUMNS)}
    review_id = F.when(F.col("_n") >= 3, F.col("_fields").getItem(2))
    typed = parts.select(
        "source_file", "file_order", "line_no", "value", "_n", "_header", "_bad_bytes",
        "_repeated_header", "_ctrl", review_id.alias("review_id"),
        *[field[c].alias(c) for c in TSV_COLUMNS if c != "review_id"],
    ).withColumn("_star", _star(F.col("star_rating"))).withColumn(
        "_date", _iso_date(F.col("review_date")))
    reason = (F.when(F.col("_header"), F.lit(HEADER))
              .when(F.col("_repeated_header"), "repeated_header")
              .when(F.col("_bad_bytes"), "unreadable_bytes")
              .when(F.col("_ctrl"), "control_chars")
              .when(F.col("_n") != 15, "field_count")
              .when(F.col("review_id") == "", "missing_review_id")
              .when(F.col("_star").isNull(), "bad_star")
              .when(_is_blank(F.col("review_body")), "empty_body")
              .when(F.col("_date").isNull(), "bad_date"))
    detail = (F.when(F.col("_header"), F.lit(None))
              .when(F.col("_repeated_header"), F.format_string(
                  "the header line again at line %d (files joined?)", F.col("line_no")))
              .when(F.col("_bad_bytes"), "invalid UTF-8 bytes (shown as U+FFFD)")
              .when(F.col("_ctrl"), _control_detail(text))
              .when(F.col("_n") != 15, F.format_string("%d fields (expected 15)", F.col("_n")))
              .when(F.col("review_id") == "", "review_id is empty")
              .when(F.col("_star").isNull(), _quoted("star_rating", F.col("star_rating")))
              .when(_is_blank(F.col("review_body")), "review_body is empty")
              .when(F.col("_date").isNull(), _quoted("review_date", F.col("review_date"))))
    return (typed
            .withColumn("reason", reason)
            .withColumn("detail", detail)
            .select(
                "source_file", "file_order", "line_no", "review_id",
                F.col("_star").alias("star"),
                F.col("review_body").alias("body"),
                F.col("review_headline").alias("headline"),
                "product_id", "product_parent", "product_title", "product_category",
                "customer_id", "marketplace",
                _int_or_null(F.col("helpful_votes")).alias("helpful_votes"),
                _int_or_null(F.col("total_votes")).alias("total_votes"),
                "vine", "verified_purchase",
                F.col("_date").alias("review_date"),
                "reason", "detail",
                F.when(F.col("reason").isNotNull() & (F.col("reason") != HEADER),
                       _decoded(F.col("value"))).alias("raw"),
                F.col("value").alias("_line"),
            ))


def finish_tsv(deduped: DataFrame) -> DataFrame:
    """Fill raw of duplicates with their line and drop the helper column."""
    return (deduped
            .withColumn("raw", F.when(F.col("reason") == "duplicate_review_id", F.col("_line"))
                        .otherwise(F.col("raw")))
            .drop("_line"))


# --------------------------------------------------------------------------- JSON lines
def _unix_day(text: Column, per_day: int, digits: int) -> Column:
    return F.when(text.rlike(rf"^\d{{1,{digits}}}$"),
                  F.date_from_unix_date(F.floor(text.cast("long") / per_day).cast("int")))


def _us_date(text: Column) -> Column:
    """'MM dd, yyyy' (McAuley reviewTime, e.g. '09 13, 2009') → date, else null."""
    pattern = r"^(\d{1,2}) (\d{1,2}), (\d{4})$"
    return F.when(text.rlike(pattern), _calendar_date(
        F.regexp_extract(text, pattern, 3).cast("int"),
        F.regexp_extract(text, pattern, 1).cast("int"),
        F.regexp_extract(text, pattern, 2).cast("int")))


def classify_jsonl(numbered: DataFrame) -> DataFrame:
    """Numbered McAuley JSON lines (2014, 2018 or 2023, one format per row) → review columns +
    reason/detail/raw (raw kept for every row: it cannot be rebuilt from the fields)."""
    text = _decoded(F.col("value"))
    rec = F.from_json(text, JSON_SCHEMA, {"columnNameOfCorruptRecord": "_corrupt_record"})
    j = {n: F.col("_j").getField(n) for n in JSON_FIELDS}
    user = F.coalesce(j["reviewerID"], j["user_id"])
    asin = j["asin"]
    time_key = F.coalesce(j["timestamp"], j["unixReviewTime"], j["reviewTime"], F.lit(""))
    helpful = F.from_json(j["helpful"], T.ArrayType(T.StringType()))
    verified = F.coalesce(j["verified_purchase"], j["verified"])
    star_text = F.coalesce(j["rating"], j["overall"])
    parsed = (numbered
              .withColumn("_j", rec)
              .withColumn("_bad_json", F.col("_j").isNull()
                          | F.col("_j").getField("_corrupt_record").isNotNull())
              .withColumn("_bad_bytes", _unreadable(F.col("value"))))
    has_id = ~_is_blank(user) & ~_is_blank(asin)
    typed = parsed.select(
        "source_file", "file_order", "line_no", "_bad_json", "_bad_bytes",
        F.when(has_id, F.substring(F.sha2(F.concat_ws("\u001f", user, asin, time_key), 256),
                                   1, 20)).alias("review_id"),
        _star(star_text).alias("star"),
        star_text.alias("_star_text"),
        F.coalesce(j["text"], j["reviewText"]).alias("body"),
        F.coalesce(j["title"], j["summary"]).alias("headline"),
        asin.alias("product_id"),
        j["parent_asin"].alias("product_parent"),
        F.lit(None).cast("string").alias("product_title"),
        F.lit(None).cast("string").alias("product_category"),
        user.alias("customer_id"),
        F.lit(None).cast("string").alias("marketplace"),
        _int_or_null(F.coalesce(j["helpful_vote"], F.regexp_replace(j["vote"], ",", ""),
                                F.when(F.size(helpful) == 2, helpful.getItem(0))))
        .alias("helpful_votes"),
        _int_or_null(F.when(F.size(helpful) == 2, helpful.getItem(1))).alias("total_votes"),
        F.lit(None).cast("string").alias("vine"),
        F.when(verified == "true", "Y").when(verified == "false", "N")
        .alias("verified_purchase"),
        F.coalesce(_unix_day(j["timestamp"], 86_400_000, 15),
                   _unix_day(j["unixReviewTime"], 86_400, 12),
                   _us_date(j["reviewTime"])).alias("review_date"),
        F.coalesce(j["timestamp"], j["unixReviewTime"], j["reviewTime"]).alias("_time_text"),
        text.alias("raw"),
    )
    ctrl = F.concat_ws("\t", F.col("headline"), F.col("body")).rlike(CONTROL_CHARS)
    reason, detail = _first_rule([
        (F.col("_bad_bytes"), "unreadable_bytes", F.lit("invalid UTF-8 bytes (shown as U+FFFD)")),
        (F.col("_bad_json"), "bad_json", F.lit("not a JSON object")),
        (ctrl, "control_chars", F.lit("control character (C0 or DEL) in the headline or text")),
        (F.col("review_id").isNull(), "missing_review_id", F.lit("user id or asin missing")),
        (F.col("star").isNull(), "bad_star", _quoted("rating", F.col("_star_text"))),
        (_is_blank(F.col("body")), "empty_body", F.lit("review text is empty")),
        (F.col("review_date").isNull(), "bad_date", _quoted("time", F.col("_time_text")))])
    return (typed.withColumn("reason", reason).withColumn("detail", detail)
            .drop("_bad_json", "_bad_bytes", "_star_text", "_time_text"))


def finish_jsonl(deduped: DataFrame) -> DataFrame:
    return deduped


# --------------------------------------------------------------------------- duplicates
def first_occurrences(classified: DataFrame) -> DataFrame:
    """review_id, _first (file_order, line_no, source_file) of every review_id that more than
    one row without a reason carries; _first is its earliest row by (file order, line).

    A hash aggregate of three narrow columns: partial aggregation before the shuffle, no sort,
    no wide row moved. Its size is the number of repeated ids, usually a tiny share of rows.
    """
    return (classified.where(F.col("reason").isNull())
            .groupBy(F.col("review_id"))
            .agg(F.count(F.lit(1)).alias("_n"),
                 F.min(F.struct("file_order", "line_no", "source_file")).alias("_first"))
            .where(F.col("_n") > 1)
            .select(F.col("review_id"), F.col("_first")))


def mark_duplicates(classified: DataFrame, repeated: DataFrame, broadcast: bool) -> DataFrame:
    """Quarantine later occurrences of a review_id among rows without a reason yet.

    repeated: first_occurrences(classified). broadcast: ship it to every task (the caller
    counted it; a huge one is joined by a shuffle instead, never collected).
    """
    ids = F.broadcast(repeated) if broadcast else repeated
    first = F.col("_first")
    is_dup = (F.col("reason").isNull() & first.isNotNull()
              & ~((F.col("file_order") == first.getField("file_order"))
                  & (F.col("line_no") == first.getField("line_no"))))
    return (classified.join(ids, on="review_id", how="left")
            .withColumn("_dup", is_dup)
            .withColumn("reason", F.when(F.col("_dup"), "duplicate_review_id")
                        .otherwise(F.col("reason")))
            .withColumn("detail", F.when(F.col("_dup"), F.format_string(
                "review_id %s first seen at %s:%d", F.col("review_id"),
                first.getField("source_file"), first.getField("line_no")))
                .otherwise(F.col("detail")))
            .drop("_first", "_dup"))


# --------------------------------------------------------------------------- outputs
def reviews_of(outcomes: DataFrame) -> DataFrame:
    """Accepted rows in the ingest/reviews layout."""
    return (outcomes.where(F.col("reason").isNull())
            .select(*[F.col(f.name).cast(f.dataType) for f in REVIEWS_SCHEMA.fields]))


def quarantine_of(outcomes: DataFrame) -> DataFrame:
    """Rejected rows (headers excluded) in the quarantine layout."""
    return (outcomes.where(F.col("reason").isNotNull() & (F.col("reason") != HEADER))
            .select(*[F.col(f.name).cast(f.dataType) for f in QUARANTINE_SCHEMA.fields]))


def compute_outcome_counts(reviews: DataFrame, quarantine: DataFrame,
                           header_files: list[str]) -> list[tuple[str, str | None, int]]:
    """(source_file, reason or None for accepted, rows) of the written tables (two jobs over
    one or two columns, tiny results), plus one header line for each file in header_files."""
    accepted = reviews.groupBy("source_file").count().collect()
    rejected = quarantine.groupBy("source_file", "reason").count().collect()
    return ([(r["source_file"], None, int(r["count"])) for r in accepted]
            + [(r["source_file"], r["reason"], int(r["count"])) for r in rejected]
            + [(path, HEADER, 1) for path in header_files])


def build_manifest(files: list[str], lines_per_file: dict[str, int],
                   counts: list[tuple[str, str | None, int]], max_rejected_share: float,
                   expect_header: bool) -> dict:
    """Per-file and total counts; ValueError naming the file when the identity
    lines − header = accepted + Σ rejected fails or the rejected share is above the limit."""
    per_file = []
    totals = {"lines": 0, "header_lines": 0, "accepted": 0, "rejected_total": 0,
              "rejected": {}}
    for path in files:
        by_reason = {reason: n for src, reason, n in counts if src == path}
        header = by_reason.pop(HEADER, 0)
        accepted = by_reason.pop(None, 0)
        rejected = {r: by_reason[r] for r in sorted(by_reason)}
        lines = lines_per_file.get(path, 0)
        rejected_total = sum(rejected.values())
        if lines - header != accepted + rejected_total:
            raise ValueError(
                f"{path}: line accounting broken: {lines} lines - {header} header != "
                f"{accepted} accepted + {rejected_total} rejected; nothing was published")
        if expect_header and header != 1:
            raise ValueError(f"{path}: expected 1 header line, found {header}")
        data_rows = lines - header
        share = rejected_total / data_rows if data_rows else 0.0
        if share > max_rejected_share:
            raise ValueError(
                f"{path}: {rejected_total} of {data_rows} rows rejected ({share:.2%}), above "
                f"ingest.max_rejected_share {max_rejected_share:.2%}; by reason {rejected}; "
                f"nothing was published")
        per_file.append({"path": path, "lines": lines, "header_lines": header,
                         "accepted": accepted, "rejected": rejected,
                         "rejected_total": rejected_total, "rejected_share": round(share, 6)})
        for key in ("lines", "header_lines", "accepted", "rejected_total"):
            totals[key] += per_file[-1][key]
        for reason, n in rejected.items():
            totals["rejected"][reason] = totals["rejected"].get(reason, 0) + n
    unknown = {src for src, _, _ in counts} - set(files)
    if unknown:
        raise ValueError(f"rows from files outside the input list: {sorted(unknown)}")
    data_rows = totals["lines"] - totals["header_lines"]
    if data_rows == 0:
        raise ValueError(f"input has no data rows (only headers or nothing): {files}")
    totals["rejected"] = dict(sorted(totals["rejected"].items()))
    totals["rejected_share"] = round(totals["rejected_total"] / data_rows, 6)
    return {"files": per_file, "totals": totals,
            "counts": {"reviews": totals["accepted"], "quarantine": totals["rejected_total"]}}
