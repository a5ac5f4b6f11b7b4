"""Ingest of the amazon_reviews_us Parquet edition (issue 16 point 8): partitioned by
product_category, the TSV's quarantine rules and the count identity lines = accepted + rejected.
The dataset is written with pyarrow (not Spark); the expected outcome of each row is by hand."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from starscale.stages import ingest as stage
from tests.helpers import make_config

STORED = pa.schema([("marketplace", pa.string()), ("customer_id", pa.string()),
                    ("review_id", pa.string()), ("product_id", pa.string()),
                    ("product_parent", pa.string()), ("product_title", pa.string()),
                    ("star_rating", pa.int32()), ("helpful_votes", pa.int32()),
                    ("total_votes", pa.int32()), ("vine", pa.string()),
                    ("verified_purchase", pa.string()), ("review_headline", pa.string()),
                    ("review_body", pa.string()), ("review_date", pa.date32()),
                    ("year", pa.int32())])
DAY = dt.date(2015, 8, 31)


def _row(rid, star, body, date=DAY, helpful=1):
    return {"marketplace": "US", "customer_id": "111", "review_id": rid, "product_id": "B00P",
            "product_parent": "999", "product_title": "Title", "star_rating": star,
            "helpful_votes": helpful, "total_votes": 2, "vine": "N", "verified_purchase": "Y",
            "review_headline": "ok", "review_body": body, "review_date": date, "year": 2015}


WIRELESS = [_row("R1", 5, "good"),            # 1 accepted
            _row("R2", 0, "zero stars"),      # 2 bad_star
            _row("R3", 4, None),              # 3 empty_body (null)
            _row("R4", None, "no star"),      # 4 bad_star (null)
            _row("R1", 3, "again"),           # 5 duplicate_review_id of line 1
            _row("R5", 2, "a\ttab"),          # 6 field_count, as in the TSV edition
            _row("R6", 1, "undated", None)]   # 7 bad_date
SOFTWARE = [_row("R7", 3, "ok"),              # 1 accepted
            _row("R8", 5, "fine", helpful=None)]   # 2 accepted, votes null


def write_dataset(root):
    for category, rows in (("Wireless", WIRELESS), ("Digital_Software", SOFTWARE)):
        folder = root / f"product_category={category}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=STORED), folder / "part-0.parquet")
    (root / "_SUCCESS").write_text("")
    return root


def test_parquet_edition_same_rules_and_count_identity(spark, tmp_path):
    root = write_dataset(tmp_path / "amazon_reviews_parquet")
    cfg = make_config(tmp_path, f"ingest.inputs=[{root}]", "ingest.format=parquet",
                      "ingest.max_rejected_share=1.0")
    manifest = stage.run(spark, cfg)
    wireless = f"{root}/product_category=Wireless/part-0.parquet"
    software = f"{root}/product_category=Digital_Software/part-0.parquet"
    by_file = {f["path"].replace("file:", ""): f for f in manifest["files"]}
    assert by_file[wireless]["lines"] == 7 and by_file[wireless]["accepted"] == 1
    assert by_file[wireless]["rejected"] == {"bad_date": 1, "bad_star": 2,
                                             "duplicate_review_id": 1, "empty_body": 1,
                                             "field_count": 1}
    assert by_file[software]["lines"] == 2 and by_file[software]["accepted"] == 2
    assert manifest["totals"]["header_lines"] == 0
    assert (manifest["totals"]["lines"], manifest["totals"]["accepted"],
            manifest["totals"]["rejected_total"]) == (9, 3, 6)

    out = cfg.stage_dir("ingest")
    reviews = {r["review_id"]: r for r in spark.read.parquet(out + "/reviews").collect()}
    assert set(reviews) == {"R1", "R7", "R8"}
    r1 = reviews["R1"]
    assert (r1["star"], r1["body"], r1["product_category"], r1["review_date"], r1["line_no"]) == \
        (5, "good", "Wireless", DAY, 1)
    assert reviews["R8"]["product_category"] == "Digital_Software"
    assert reviews["R8"]["helpful_votes"] is None and reviews["R8"]["line_no"] == 2
    quarantine = {(r["line_no"], r["reason"]) for r in
                  spark.read.parquet(out + "/quarantine").where("source_file like '%Wireless%'")
                  .collect()}
    assert quarantine == {(2, "bad_star"), (3, "empty_body"), (4, "bad_star"),
                          (5, "duplicate_review_id"), (6, "field_count"), (7, "bad_date")}
