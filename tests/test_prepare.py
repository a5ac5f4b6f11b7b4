"""The prepare stage end to end on a tiny ingest output published with a manifest."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from starscale import storage
from starscale.stages import prepare
from starscale.ingest import REVIEWS_SCHEMA as INGEST_REVIEWS_SCHEMA

# (review_id, star, body); hand-counted outcome below
BODIES = [
    ("R01", 5, "Great phone!"),
    ("R02", 4, "great   PHONE"),              # same text as R01 → duplicate_text (kept R01)
    ("R00", 1, "GREAT phone..."),             # smallest id: R00 is kept, R01 and R02 go
    ("R03", 2, "<br />[[VIDEOID:abc]]"),      # empty_after_clean
    ("R04", 3, "x5 4g !!!"),                  # empty_after_clean
    ("R05", 1, "Battery died after 2 days &amp; I can't return it"),
    ("R06", 2, "http://spam.example.com"),    # empty_after_clean
] + [(f"R{i:02d}", 1 + i % 5, f"review text number {i}") for i in range(10, 50)]


def _publish_ingest(spark, cfg) -> None:
    rows = [(rid, star, body, "h", "P", "pp", "title", "Wireless", "c", "US", 0, 0, "N", "Y",
             dt.date(2015, 1, 1), "part-00000.tsv", k + 2) for k, (rid, star, body) in
            enumerate(BODIES)]
    reviews = spark.createDataFrame(rows, INGEST_REVIEWS_SCHEMA)

    def write(staging: str) -> dict:
        reviews.write.parquet(staging + "/reviews")
        return {"rows": len(rows)}

    storage.publish(spark, cfg.stage_dir("ingest"), write, {"stage": "ingest"})


def test_prepare_stage_counts_add_up(spark, config_factory):
    cfg = config_factory("ladder.sizes=[5, 20, 1000, full]")
    with pytest.raises(ValueError, match="ingest"):
        prepare.run(spark, cfg)                   # no ingest output yet
    _publish_ingest(spark, cfg)
    summary = prepare.run(spark, cfg)
    assert summary["skipped"] is False
    assert summary["rows_in"] == 47
    assert summary["quarantine_by_reason"] == {"duplicate_text": 2, "empty_after_clean": 3}
    assert summary["rows_out"] == 42 and summary["quarantined"] == 5
    counts = summary["counts"]
    assert sum(n for stars in counts.values() for n in stars.values()) == 42
    train_total = sum(counts["train"].values())
    assert summary["ladder"]["full"] == {str(s): counts["train"].get(str(s), 0)
                                         for s in range(1, 6)}
    assert sum(summary["ladder"]["5"].values()) == 5
    assert sum(summary["ladder"]["20"].values()) == 20
    assert summary["ladder"]["1000"] == summary["ladder"]["full"]
    assert summary["ladder_clipped"] == [1000]

    out = cfg.stage_dir("prepare")
    with open(os.path.join(out, storage.MANIFEST)) as fh:
        assert json.load(fh)["ladder"] == summary["ladder"]
    reviews = spark.read.parquet(out + "/reviews")
    quarantine = spark.read.parquet(out + "/quarantine")
    assert reviews.columns == ["review_id", "star", "text", "split", "class_rank"]
    assert quarantine.columns == ["source_file", "line_no", "review_id", "reason", "detail", "raw"]
    kept = {r["review_id"]: r for r in reviews.collect()}
    dropped = {r["review_id"]: r for r in quarantine.collect()}
    assert set(kept) | set(dropped) == {rid for rid, _, _ in BODIES}
    assert not set(kept) & set(dropped)
    assert kept["R00"]["text"] == "great phone"
    assert kept["R05"]["text"] == "battery died after 2 days i can not return it"
    assert (dropped["R01"]["reason"], dropped["R01"]["detail"]) == ("duplicate_text", "R00")
    assert (dropped["R02"]["reason"], dropped["R02"]["detail"]) == ("duplicate_text", "R00")
    assert dropped["R03"]["reason"] == "empty_after_clean"
    assert (dropped["R04"]["raw"], dropped["R04"]["line_no"], dropped["R04"]["source_file"]) == \
        ("x5 4g !!!", 6, "part-00000.tsv")
    assert sum(1 for r in kept.values() if r["split"] == "train") == train_total
    assert all((r["class_rank"] is None) == (r["split"] != "train") for r in kept.values())

    again = prepare.run(spark, cfg)
    assert again["skipped"] is True
