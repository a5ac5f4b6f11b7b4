"""make-corpus: determinism across partition counts, the star mix, lengths, layout and dirt rates.

Expectations are the issue's numbers (the Wireless star mix, median ~35 words, p90 <= ~100,
a tail past 500) and the configured dirt rates with binomial tolerance; counts are taken from
the written files by independent parsing, never from the generator's own functions.
"""
from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import pytest

from starscale.stages import make_corpus

HEADER = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
          "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
          "review_headline\treview_body\treview_date")
WIRELESS_MIX = {1: 0.140, 2: 0.067, 3: 0.090, 4: 0.167, 5: 0.536}
NO_DIRT = [f"corpus.dirt.{k}=0" for k in ("html_entity", "line_break", "url", "video_tag",
                                          "empty_body", "extra_field", "bad_star",
                                          "duplicate_id")]
ENTITY = re.compile(r"&(amp|quot|#\d+|lt|gt|apos);")
DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)$")


def generate(spark, config_factory, out: Path, *overrides: str) -> tuple[Path, dict]:
    cfg = config_factory(f"run.output_dir={out}", *overrides)
    summary = make_corpus.run(spark, cfg)
    return out / "corpus", summary


def part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-"))


def part_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in part_files(folder)}


def part_lines(folder: Path) -> list[list[str]]:
    """Lines of each part file (text, gunzipped when .gz), checking the trailing newline."""
    out = []
    for path in part_files(folder):
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
        assert text.endswith("\n"), path
        out.append(text[:-1].split("\n"))
    return out


def rows_of(folder: Path) -> list[list[str]]:
    """Data rows of all parts in order (headers checked and dropped)."""
    rows = []
    for lines in part_lines(folder):
        assert lines[0] == HEADER
        rows.extend(line.split("\t") for line in lines[1:])
    return rows


def body_of(fields: list[str]) -> str:
    # a 16-field row has a stray tab inside the body (fields 13 and 14)
    return "\t".join(fields[13:-1])


def within_binomial(count: int, n: int, p: float, z: float = 4.5) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("gz", [False, True])
def test_same_seed_same_bytes_whatever_the_partitions(spark, config_factory, tmp_path, gz):
    common = ["corpus.rows=3001", "corpus.part_files=3", f"corpus.gzip={str(gz).lower()}"]
    two, s2 = generate(spark, config_factory, tmp_path / "p2", *common, "corpus.partitions=2")
    seven, s7 = generate(spark, config_factory, tmp_path / "p7", *common, "corpus.partitions=7")
    names = [f"part-0000{p}{'.gz' if gz else ''}" for p in range(3)]
    assert sorted(part_bytes(two)) == names
    assert part_bytes(two) == part_bytes(seven)
    assert s2["dirt_counts"] == s7["dirt_counts"] and s2["star_counts"] == s7["star_counts"]
    if gz:
        for data in part_bytes(two).values():
            assert data[:3] == b"\x1f\x8b\x08"
            assert data[4:8] == b"\x00\x00\x00\x00"      # gzip header mtime: fixed, not "now"
    # rows i*3//3001 == p: part 0 holds 0..1000, part 1 1001..2000, part 2 2001..3000
    assert [len(lines) - 1 for lines in part_lines(two)] == [1001, 1000, 1000]


def test_other_seed_other_bytes_and_header_per_part(spark, config_factory, tmp_path):
    common = ["corpus.rows=2000", "corpus.part_files=4", "corpus.partitions=3"]
    a, _ = generate(spark, config_factory, tmp_path / "a", *common, "corpus.seed=1")
    b, _ = generate(spark, config_factory, tmp_path / "b", *common, "corpus.seed=2")
    bytes_a, bytes_b = part_bytes(a), part_bytes(b)
    assert sorted(bytes_a) == sorted(bytes_b) == [f"part-0000{p}" for p in range(4)]
    assert all(bytes_a[name] != bytes_b[name] for name in bytes_a)
    for lines in part_lines(a):
        assert lines[0] == HEADER
        assert HEADER not in lines[1:]
        assert len(lines) == 1 + 500


def test_more_parts_than_rows_gives_header_only_files(spark, config_factory, tmp_path):
    folder, summary = generate(spark, config_factory, tmp_path / "tiny", "corpus.rows=3",
                               "corpus.part_files=5", "corpus.partitions=2")
    # i*5//3 for i = 0, 1, 2 → parts 0, 1, 3
    assert [len(lines) - 1 for lines in part_lines(folder)] == [1, 1, 0, 1, 0]
    assert summary["part_rows"] == [1, 1, 0, 1, 0]


def test_rerun_with_same_config_is_skipped(spark, config_factory, tmp_path):
    _, first = generate(spark, config_factory, tmp_path / "r", "corpus.rows=500")
    _, again = generate(spark, config_factory, tmp_path / "r", "corpus.rows=500")
    assert first["skipped"] is False and again["skipped"] is True


# --------------------------------------------------------------------------- clean layout
def test_clean_lines_have_15_fields_and_valid_values(spark, config_factory, tmp_path):
    folder, summary = generate(spark, config_factory, tmp_path / "clean", "corpus.rows=3000",
                               "corpus.part_files=2", "corpus.partitions=3", *NO_DIRT)
    rows = rows_of(folder)
    assert len(rows) == 3000
    ids = set()
    for fields in rows:
        assert len(fields) == 15, fields
        (market, customer, review_id, product, parent, title, category, star, helpful, total,
         vine, verified, headline, body, date) = fields
        assert market == "US" and category == "Wireless"
        assert re.fullmatch(r"R[0-9A-Z]{8,13}", review_id)
        assert re.fullmatch(r"B0[0-9A-Z]{8}", product)
        assert customer.isdigit() and parent.isdigit() and len(parent) == 9
        assert star in {"1", "2", "3", "4", "5"}
        assert 0 <= int(helpful) <= int(total)
        assert vine in {"Y", "N"} and verified in {"Y", "N"}
        assert title and headline and body
        for text in (title, headline, body):
            for marker in ("&", "<", ">", "http", "[[", "VIDEOID"):
                assert marker not in text, (marker, text)
        year = int(DATE.match(date).group(1))
        assert 1999 <= year <= 2015
        ids.add(review_id)
    assert len(ids) == 3000                           # no duplicate ids without that dirt
    assert summary["dirt_counts"] == {k: 0 for k in summary["dirt_counts"]}
    # bodies opening with '"' (a real quirk) are written as they are, never quoted
    assert any(fields[13].startswith('"') for fields in rows)


# --------------------------------------------------------------------------- dirt
DIRT_RATES = {"html_entity": 0.06, "line_break": 0.10, "url": 0.04, "video_tag": 0.03,
              "empty_body": 0.03, "extra_field": 0.03, "bad_star": 0.04, "duplicate_id": 0.05}


def test_each_dirt_kind_at_its_rate(spark, config_factory, tmp_path):
    n = 20000
    folder, summary = generate(spark, config_factory, tmp_path / "dirt", f"corpus.rows={n}",
                               "corpus.part_files=3", "corpus.partitions=4",
                               *[f"corpus.dirt.{k}={v}" for k, v in DIRT_RATES.items()])
    rows = rows_of(folder)
    assert len(rows) == n
    seen: set[str] = set()
    found = dict.fromkeys(DIRT_RATES, 0)
    stars = dict.fromkeys("12345", 0)
    for fields in rows:
        assert len(fields) in (15, 16)
        body = body_of(fields)
        found["extra_field"] += len(fields) == 16
        found["empty_body"] += body == ""
        found["html_entity"] += bool(ENTITY.search(body))
        found["line_break"] += "<br />" in body
        found["url"] += "http://" in body or "https://" in body
        found["video_tag"] += body.startswith("[[VIDEOID:")
        if fields[7] in stars:
            stars[fields[7]] += 1
        else:
            found["bad_star"] += 1
        found["duplicate_id"] += fields[2] in seen
        seen.add(fields[2])
        assert DATE.match(fields[-1])
    for kind, rate in DIRT_RATES.items():
        assert within_binomial(found[kind], n, rate), (kind, found[kind], n * rate)
    # the manifest records exactly what was injected, and the valid stars written
    assert summary["dirt_counts"] == found
    assert summary["star_counts"] == stars


# --------------------------------------------------------------------------- distribution
def test_star_mix_lengths_and_vocabulary_on_200k_rows(spark, config_factory, tmp_path):
    n = 200_000
    folder, summary = generate(spark, config_factory, tmp_path / "big", f"corpus.rows={n}",
                               "corpus.part_files=2", "corpus.partitions=4")
    rows = rows_of(folder)
    assert len(rows) == n
    stars = [fields[7] for fields in rows if fields[7] in {"1", "2", "3", "4", "5"}]
    for star, share in WIRELESS_MIX.items():
        got = stars.count(str(star)) / len(stars)
        assert abs(got - share) <= 0.005, (star, got, share)
    lengths = sorted(len(body_of(fields).split()) for fields in rows if body_of(fields))
    median = lengths[len(lengths) // 2]
    p90 = lengths[int(0.9 * len(lengths))]
    assert 32 <= median <= 38, median
    assert 85 <= p90 <= 105, p90
    assert sum(length > 500 for length in lengths) >= 20
    words = {w.strip('.,!?"').lower() for fields in rows[:50000]
             for w in body_of(fields).split()}
    assert len(words) >= 3000
    # negation and contrast: phrases whose meaning a bag of words misses
    bodies = [body_of(fields) for fields in rows[:20000]]
    assert sum(" at all." in b for b in bodies) > 200
    assert sum(" at first but " in b for b in bodies) > 200
