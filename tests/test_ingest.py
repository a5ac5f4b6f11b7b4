"""Ingest: hand-written raw files → exact accepted/quarantined rows, line numbers and counts."""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starscale import ingest
from starscale.stages import ingest as stage
from tests.helpers import REPO

HEADER = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
          "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
          "review_headline\treview_body\treview_date")


def tsv_row(rid: str, star: str = "5", body: str = "fine", date: str = "2015-08-31",
            headline: str = "ok", helpful: str = "1", total: str = "2") -> str:
    return "\t".join(["US", "111", rid, "B00P", "999", "Title", "Digital_Software", star,
                      helpful, total, "N", "Y", headline, body, date])


# The hand-written file: line numbers in comments (line 1 is the header).
QUOTED = '"Quoted" start, works fine'
HTML = "Great &amp; cheap<br /><br />I&#34;d buy again"
LINES = [
    HEADER,                                                     # 1
    tsv_row("R1", body=QUOTED),                                 # 2 accepted
    tsv_row("R2", body="has\ta tab"),                           # 3 16 fields
    "\t".join(tsv_row("R3").split("\t")[:10] + tsv_row("R3").split("\t")[11:]),  # 4 14 fields
    tsv_row("R4", body="first half").rsplit("\t", 1)[0],         # 5 body broken by a newline
    "second half\t2015-08-31",                                  # 6 its second half
    tsv_row("R5", star="0"),                                    # 7
    tsv_row("R6", star="6"),                                    # 8
    tsv_row("R7", star=""),                                     # 9
    tsv_row("R8", star="5.0"),                                  # 10 accepted as 5
    tsv_row("R9", star="five"),                                 # 11
    tsv_row("R10", body=HTML),                                  # 12 accepted as is
    tsv_row("R1", star="3", body="again"),                      # 13 duplicate of line 2
    tsv_row("R11", body=""),                                    # 14
    tsv_row("R12", date="2015-02-30"),                          # 15
    tsv_row("R13", date="08/31/2015"),                          # 16
    None,                                                       # 17 invalid UTF-8 (bytes below)
    tsv_row("R15", star="4", helpful="x"),                      # 18 accepted, votes null
    tsv_row("R16", star="1") + "\r",                            # 19 CRLF line, accepted
    tsv_row("R5", star="2"),                                    # 20 R5's first valid row: kept
]
BAD_BYTES = tsv_row("R14", body="caf\xe9").encode("utf-8").replace(b"\xc3\xa9", b"\xff")


def write_handmade(path: Path) -> Path:
    chunks = [BAD_BYTES if line is None else line.encode("utf-8") for line in LINES]
    path.write_bytes(b"\n".join(chunks) + b"\n")
    return path


def set_inputs(paths) -> str:
    return "ingest.inputs=" + json.dumps([str(p) for p in paths])


def run_ingest(spark, config_factory, paths, *overrides):
    cfg = config_factory(set_inputs(paths), *overrides)
    return cfg, stage.run(spark, cfg, force=True)


def read_table(spark, cfg, name):
    return spark.read.parquet(os.path.join(cfg.stage_dir("ingest"), name))


def test_handmade_tsv_exact_rows_reasons_and_counts(spark, config_factory, tmp_path):
    src = write_handmade(tmp_path / "hand.tsv")
    cfg, manifest = run_ingest(spark, config_factory, [src], "ingest.max_rejected_share=1.0")
    f = "file:" + str(src)
    reviews = read_table(spark, cfg, "reviews")
    assert reviews.schema == ingest.REVIEWS_SCHEMA
    got = sorted((r.line_no, r.review_id, r.star, r.body, r.helpful_votes, r.total_votes,
                  r.review_date, r.source_file) for r in reviews.collect())
    d = dt.date(2015, 8, 31)
    assert got == [
        (2, "R1", 5, QUOTED, 1, 2, d, f),
        (10, "R8", 5, "fine", 1, 2, d, f),
        (12, "R10", 5, HTML, 1, 2, d, f),
        (18, "R15", 4, "fine", None, 2, d, f),
        (19, "R16", 1, "fine", 1, 2, d, f),
        (20, "R5", 2, "fine", 1, 2, d, f),
    ]
    first = reviews.where("line_no = 2").first().asDict()
    assert first == {"review_id": "R1", "star": 5, "body": QUOTED, "headline": "ok",
                     "product_id": "B00P", "product_parent": "999", "product_title": "Title",
                     "product_category": "Digital_Software", "customer_id": "111",
                     "marketplace": "US", "helpful_votes": 1, "total_votes": 2, "vine": "N",
                     "verified_purchase": "Y", "review_date": d, "source_file": f,
                     "line_no": 2}

    quarantine = read_table(spark, cfg, "quarantine")
    assert quarantine.schema == ingest.QUARANTINE_SCHEMA
    got_q = sorted(tuple(r) for r in quarantine.collect())
    bad_raw = BAD_BYTES.decode("utf-8", errors="replace")
    assert got_q == sorted([
        (f, 3, "R2", "field_count", "16 fields (expected 15)", LINES[2]),
        (f, 4, "R3", "field_count", "14 fields (expected 15)", LINES[3]),
        (f, 5, "R4", "field_count", "14 fields (expected 15)", LINES[4]),
        (f, 6, None, "field_count", "2 fields (expected 15)", "second half\t2015-08-31"),
        (f, 7, "R5", "bad_star", "star_rating '0'", LINES[6]),
        (f, 8, "R6", "bad_star", "star_rating '6'", LINES[7]),
        (f, 9, "R7", "bad_star", "star_rating ''", LINES[8]),
        (f, 11, "R9", "bad_star", "star_rating 'five'", LINES[10]),
        (f, 13, "R1", "duplicate_review_id", f"review_id R1 first seen at {f}:2", LINES[12]),
        (f, 14, "R11", "empty_body", "review_body is empty", LINES[13]),
        (f, 15, "R12", "bad_date", "review_date '2015-02-30'", LINES[14]),
        (f, 16, "R13", "bad_date", "review_date '08/31/2015'", LINES[15]),
        (f, 17, "R14", "unreadable_bytes", "invalid UTF-8 bytes (shown as U+FFFD)", bad_raw),
    ])
    assert "\ufffd" in bad_raw

    totals = manifest["totals"]
    assert totals == {"lines": 20, "header_lines": 1, "accepted": 6, "rejected_total": 13,
                      "rejected": {"bad_date": 2, "bad_star": 4, "duplicate_review_id": 1,
                                   "empty_body": 1, "field_count": 4, "unreadable_bytes": 1},
                      "rejected_share": round(13 / 19, 6)}
    assert manifest["counts"] == {"reviews": 6, "quarantine": 13}
    (per_file,) = manifest["files"]
    assert per_file["path"] == f and per_file["lines"] - per_file["header_lines"] == \
        per_file["accepted"] + sum(per_file["rejected"].values())
    on_disk = json.loads((Path(cfg.stage_dir("ingest")) / "_MANIFEST.json").read_text())
    assert on_disk["totals"] == totals and on_disk["stage"] == "ingest"


def test_counts_do_not_depend_on_selected_columns(spark, tmp_path):
    src = write_handmade(tmp_path / "hand.tsv")
    outcomes, kept, _ = stage.build_outcomes(spark, ["file:" + str(src)], "tsv")
    reviews = ingest.reviews_of(outcomes)
    quarantine = ingest.quarantine_of(outcomes)
    for cols in (["review_id"], ["body"], ["star", "review_date"], ["*"]):
        assert reviews.select(*cols).count() == 6, cols
    for cols in (["line_no"], ["raw"], ["*"]):
        assert quarantine.select(*cols).count() == 13, cols
    assert quarantine.groupBy("reason").count().count() == 6
    for frame in kept:
        frame.unpersist()


def test_retrying_master_in_a_subprocess_gives_the_same_counts(spark, config_factory, tmp_path):
    src = write_handmade(tmp_path / "hand.tsv")
    _, in_process = run_ingest(spark, config_factory, [src], "ingest.max_rejected_share=1.0")
    out = tmp_path / "sub"
    overlay = tmp_path / "retry.yaml"
    overlay.write_text(json.dumps({
        "run": {"output_dir": str(out)},
        "spark": {"master": "local[2,3]", "log_level": "ERROR",
                  "conf": {"spark.driver.memory": "1g", "spark.ui.enabled": "false"}},
        "ingest": {"inputs": [str(src)], "max_rejected_share": 1.0},
    }))
    proc = subprocess.run(
        [sys.executable, "-m", "starscale", "ingest", "--conf", str(REPO / "conf" / "local.yaml"),
         "--conf", str(overlay), "--set", "spark.master=local[2,3]"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = json.loads((out / "ingest" / "_MANIFEST.json").read_text())
    assert sub["totals"] == in_process["totals"]
    assert sub["files"] == in_process["files"]


def write_numbered(path: Path) -> dict[str, int]:
    """~300 rows whose review_id names the line it is written on; a few broken rows between.
    Returns review_id → line number, known from how the file was written."""
    lines, expect = [HEADER], {}
    for i in range(300):
        if i % 37 == 5:
            lines.append("broken\trow")                       # field_count, shifts lines
        if i % 53 == 7:
            lines += ["half a body", "\t2015-01-01"]         # two more physical lines
        rid = f"R{i:04d}"
        body = f"body {i} ünïcödé € " + "x" * (i % 40)
        lines.append(tsv_row(rid, star=str(i % 5 + 1), body=body))
        expect[rid] = len(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expect


def test_line_numbers_exact_across_many_blocks_and_gzip(spark, config_factory, tmp_path):
    plain = tmp_path / "many.tsv"
    expect = write_numbered(plain)
    packed = tmp_path / "many.tsv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    spark.conf.set("spark.sql.files.maxPartitionBytes", "3000")
    try:
        lines = ingest.tag_lines(spark.read.text([str(plain)], lineSep="\n"))
        assert ingest.split_stats(lines).count() > 8         # really many splits
        for src in (plain, packed):
            cfg, manifest = run_ingest(spark, config_factory, [src],
                                       "ingest.max_rejected_share=1.0")
            got = {r.review_id: r.line_no for r in read_table(spark, cfg, "reviews").collect()}
            assert got == expect, src
            q = read_table(spark, cfg, "quarantine")
            assert sorted(r.line_no for r in q.collect()) == sorted(
                set(range(2, manifest["totals"]["lines"] + 1)) - set(expect.values()))
            assert manifest["totals"]["lines"] == len(plain.read_text().split("\n")) - 1
        # Both files and four tiny ones at once, tiny open cost: several splits share a task.
        # The second file's rows all repeat the first file's review_ids.
        spark.conf.set("spark.sql.files.openCostInBytes", "1")
        tiny = []
        for k in range(4):
            tiny.append(tmp_path / f"tiny{k}.tsv")
            tiny[-1].write_text(HEADER + "\n" + tsv_row(f"T{k}") + "\n")
        inputs = [plain, packed, *tiny]
        text = spark.read.text([str(p) for p in inputs], lineSep="\n")
        splits = ingest.split_stats(ingest.tag_lines(text)).count()
        assert text.rdd.getNumPartitions() < splits              # really packed
        cfg, manifest = run_ingest(spark, config_factory, inputs, "ingest.max_rejected_share=1.0")
        got = {r.review_id: (r.source_file, r.line_no)
               for r in read_table(spark, cfg, "reviews").collect()}
        assert got == {**{rid: (f"file:{plain}", n) for rid, n in expect.items()},
                       **{f"T{k}": (f"file:{t}", 2) for k, t in enumerate(tiny)}}
        dups = {(r.review_id, r.line_no, r.detail) for r in read_table(spark, cfg, "quarantine")
                .where("reason = 'duplicate_review_id'").collect()}
        assert dups == {(rid, n, f"review_id {rid} first seen at file:{plain}:{n}")
                        for rid, n in expect.items()}
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")


def test_glob_of_several_files_in_order_with_cross_file_duplicates(spark, config_factory,
                                                                   tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "a1.tsv").write_text("\n".join([HEADER, tsv_row("A"), tsv_row("B")]) + "\n")
    (data / "a2.tsv").write_text("\n".join([HEADER, tsv_row("C"), tsv_row("A", star="1")]) + "\n")
    (data / "b.tsv").write_text("\n".join([HEADER, tsv_row("B", star="2")]) + "\n")
    (data / "skip.tsv").write_text("\n".join([HEADER, tsv_row("Z")]) + "\n")
    # b.tsv is listed first, so its B is the first occurrence; the glob then adds a1, a2.
    cfg, manifest = run_ingest(spark, config_factory,
                               [data / "b.tsv", data / "a*.tsv", data / "b.tsv"],
                               "ingest.max_rejected_share=1.0")
    b, a1, a2 = (f"file:{data / n}" for n in ("b.tsv", "a1.tsv", "a2.tsv"))
    got = sorted((r.source_file, r.line_no, r.review_id, r.star)
                 for r in read_table(spark, cfg, "reviews").collect())
    assert got == sorted([(b, 2, "B", 2), (a1, 2, "A", 5), (a2, 2, "C", 5)])
    got_q = sorted((r.source_file, r.line_no, r.reason, r.detail)
                   for r in read_table(spark, cfg, "quarantine").collect())
    assert got_q == sorted([(a1, 3, "duplicate_review_id", f"review_id B first seen at {b}:2"),
                            (a2, 3, "duplicate_review_id", f"review_id A first seen at {a1}:2")])
    assert [f["path"] for f in manifest["files"]] == [b, a1, a2]
    assert [f["lines"] for f in manifest["files"]] == [2, 3, 3]
    assert manifest["totals"]["header_lines"] == 3


def sha20(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def test_jsonl_each_mcauley_format(spark, config_factory, tmp_path):
    v2014 = {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald",
             "helpful": [2, 3], "reviewText": "I bought this for my husband.", "overall": 5.0,
             "summary": "Heavenly Highway Hymns", "unixReviewTime": 1252800000,
             "reviewTime": "09 13, 2009"}
    v2018 = {"overall": 4.0, "vote": "1,234", "verified": True, "reviewTime": "12 11, 2015",
             "reviewerID": "A27BTSGLXK2C5K", "asin": "B017O9P72A", "style": {"Format:": " Kindle"},
             "reviewerName": "Jacob M. Wessler", "reviewText": "Alexa is not able to control",
             "summary": "VERY Buggy"}                       # no unixReviewTime: reviewTime used
    v2023 = {"rating": 1.0, "title": "Not as described", "text": "Arrived broken",
             "images": [], "asin": "B088SZDGXG", "parent_asin": "B08BBQ29N5",
             "user_id": "AEYORY2AVPMCPDV57CE337YU5LXA", "timestamp": 1628913600123,
             "helpful_vote": 0, "verified_purchase": False}
    lines = [json.dumps(v2014), json.dumps(v2018), json.dumps(v2023),
             '{"overall": 5.0, "reviewText": "trunc',            # 4 bad_json
             "",                                                # 5 bad_json (blank)
             json.dumps({**v2014, "overall": 4.5}),             # 6 bad_star (same id as 1)
             json.dumps({**v2023, "text": " "}),                # 7 empty_body
             json.dumps({**v2018, "reviewTime": "13 45, 2015"}),  # 8 bad_date
             json.dumps({"asin": "X", "overall": 5.0, "reviewText": "no user"}),  # 9
             json.dumps({**v2014, "summary": "again"})]          # 10 duplicate of 1
    src = tmp_path / "Books 5%.json.gz"           # URI-encoded by Spark: %20, %25
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    cfg, manifest = run_ingest(spark, config_factory, [src], "ingest.format=jsonl",
                               "ingest.max_rejected_share=1.0")
    f = f"file:{src}"
    id14 = sha20("A2SUAM1J3GNN3B", "0000013714", "1252800000")
    id18 = sha20("A27BTSGLXK2C5K", "B017O9P72A", "12 11, 2015")
    id23 = sha20("AEYORY2AVPMCPDV57CE337YU5LXA", "B088SZDGXG", "1628913600123")
    reviews = {r.line_no: r.asDict() for r in read_table(spark, cfg, "reviews").collect()}
    assert reviews == {
        1: {"review_id": id14, "star": 5, "body": "I bought this for my husband.",
            "headline": "Heavenly Highway Hymns", "product_id": "0000013714",
            "product_parent": None, "product_title": None, "product_category": None,
            "customer_id": "A2SUAM1J3GNN3B", "marketplace": None, "helpful_votes": 2,
            "total_votes": 3, "vine": None, "verified_purchase": None,
            "review_date": dt.date(2009, 9, 13), "source_file": f, "line_no": 1},
        2: {"review_id": id18, "star": 4, "body": "Alexa is not able to control",
            "headline": "VERY Buggy", "product_id": "B017O9P72A", "product_parent": None,
            "product_title": None, "product_category": None, "customer_id": "A27BTSGLXK2C5K",
            "marketplace": None, "helpful_votes": 1234, "total_votes": None, "vine": None,
            "verified_purchase": "Y", "review_date": dt.date(2015, 12, 11),
            "source_file": f, "line_no": 2},
        3: {"review_id": id23, "star": 1, "body": "Arrived broken", "headline": "Not as described",
            "product_id": "B088SZDGXG", "product_parent": "B08BBQ29N5", "product_title": None,
            "product_category": None, "customer_id": "AEYORY2AVPMCPDV57CE337YU5LXA",
            "marketplace": None, "helpful_votes": 0, "total_votes": None, "vine": None,
            "verified_purchase": "N", "review_date": dt.date(2021, 8, 14),
            "source_file": f, "line_no": 3},
    }
    got_q = sorted((r.line_no, r.review_id, r.reason, r.detail, r.raw)
                   for r in read_table(spark, cfg, "quarantine").collect())
    assert got_q == [
        (4, None, "bad_json", "not a JSON object", lines[3]),
        (5, None, "bad_json", "not a JSON object", ""),
        (6, id14, "bad_star", "rating '4.5'", lines[5]),
        (7, id23, "empty_body", "review text is empty", lines[6]),
        (8, sha20("A27BTSGLXK2C5K", "B017O9P72A", "13 45, 2015"), "bad_date",
         "time '13 45, 2015'", lines[7]),
        (9, None, "missing_review_id", "user id or asin missing", lines[8]),
        (10, id14, "duplicate_review_id", f"review_id {id14} first seen at {f}:1", lines[9]),
    ]
    assert manifest["totals"]["lines"] == 10 and manifest["totals"]["header_lines"] == 0
    assert manifest["counts"] == {"reviews": 3, "quarantine": 7}


def test_failures_name_the_file_and_publish_nothing(spark, config_factory, tmp_path):
    hand = write_handmade(tmp_path / "hand.tsv")
    no_header = tmp_path / "noheader.tsv"
    no_header.write_text(tsv_row("R1") + "\n")
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header_only.tsv"
    header_only.write_text(HEADER + "\n")
    missing = tmp_path / "nowhere" / "x.tsv"
    cases = [([hand], "rows rejected", str(hand)),            # 13/19 > default 0.05
             ([no_header], "not the amazon_reviews_us header", str(no_header)),
             ([empty], "empty input file", str(empty)),
             ([header_only], "no data rows", str(header_only)),
             ([missing], "not found", str(missing))]
    for paths, message, named in cases:
        cfg = config_factory(set_inputs(paths))
        with pytest.raises(ValueError, match=message) as info:
            stage.run(spark, cfg, force=True)
        assert named in str(info.value)
        assert not os.path.exists(cfg.stage_dir("ingest"))
        assert not os.path.exists(cfg.stage_dir("ingest") + "._staging")


def test_reads_the_corpus_when_inputs_is_empty(spark, config_factory, tmp_path):
    cfg = config_factory("ingest.max_rejected_share=1.0")
    corpus = Path(cfg.stage_dir("corpus"))
    corpus.mkdir(parents=True)
    (corpus / "part-00000").write_text("\n".join([HEADER, tsv_row("R1")]) + "\n")
    (corpus / "part-00001.gz").write_bytes(gzip.compress(
        ("\n".join([HEADER, tsv_row("R2"), tsv_row("R1")]) + "\n").encode()))
    with pytest.raises(ValueError, match="make-corpus"):
        stage.run(spark, cfg)
    (corpus / "_MANIFEST.json").write_text(json.dumps({"stage": "make-corpus", "complete": True}))
    manifest = stage.run(spark, cfg)
    assert manifest["counts"] == {"reviews": 2, "quarantine": 1}
    assert list(manifest["inputs"]) == [str(corpus)]
    assert stage.run(spark, cfg)["skipped"] is True


def test_synthetic_corpus_dirt_is_caught_exactly(spark, config_factory):
    from starscale.stages import make_corpus
    cfg = config_factory("corpus.rows=3000", "corpus.part_files=2", "corpus.partitions=2",
                         "corpus.gzip=true", "corpus.dirt.extra_field=0.01",
                         "corpus.dirt.bad_star=0.01", "corpus.dirt.duplicate_id=0.01",
                         "corpus.dirt.empty_body=0.01")
    dirt = make_corpus.run(spark, cfg)["dirt_counts"]
    manifest = stage.run(spark, cfg)
    totals = manifest["totals"]
    assert totals["header_lines"] == 2 and totals["lines"] == 3002
    # The generator's own counts. A row may carry several kinds of dirt and then has one
    # reason, and a repeated id whose first row was rejected is kept: each reason is at most
    # its dirt count, and together they are close to the sum.
    injected = {"bad_star": dirt["bad_star"], "duplicate_review_id": dirt["duplicate_id"],
                "empty_body": dirt["empty_body"], "field_count": dirt["extra_field"]}
    assert set(totals["rejected"]) == set(injected)
    for reason, n in totals["rejected"].items():
        assert 0.85 * injected[reason] <= n <= injected[reason], reason
    reviews = read_table(spark, cfg, "reviews")
    assert reviews.select("review_id").distinct().count() == totals["accepted"]
    assert reviews.where("trim(body) = '' OR star IS NULL OR review_date IS NULL").count() == 0


def test_real_file_first_20k_rows_all_accounted(spark, config_factory, tmp_path, real_data_path):
    head = tmp_path / "digital_software_20k.tsv.gz"
    with gzip.open(real_data_path, "rb") as raw:
        first = list(itertools.islice(raw, 20_001))          # header + 20,000 rows
    head.write_bytes(gzip.compress(b"".join(first)))
    cfg, manifest = run_ingest(spark, config_factory, [head])
    totals = manifest["totals"]
    assert totals["lines"] == 20_001 and totals["header_lines"] == 1
    assert totals["accepted"] + totals["rejected_total"] == 20_000
    assert read_table(spark, cfg, "reviews").count() == totals["accepted"]
    assert read_table(spark, cfg, "quarantine").count() == totals["rejected_total"]
    assert totals["accepted"] > 19_000
