"""starscale.clean: hand-written expectations, Spark == Python, idempotence."""
from __future__ import annotations

import gzip
import itertools
import random

import pytest

from starscale.clean import (NEGATIONS, STOPWORDS, clean_column, clean_text, lemma,
                             with_clean_text)
from tests.helpers import REAL_DATA

SW, LEM = "remove_stopwords", "lemmatize"

# (input, flags, expected) — expectations written by hand from the rules in the module docstring.
HAND_CASES = [
    ("[[VIDEOID:abc123]] Great phone", (), "great phone"),
    ("[[ASIN:B00C2F2N8I Inspyder Web2Disk 4 [Download]] works", (), "works"),
    ("Visit http://example.com/a?b=1 or www.foo.org/x now", (), "visit or now"),
    ("GREAT Value", (), "great value"),
    ("line one\nline two\r\nthree\tfour", (), "line one line two three four"),
    ("good<br />bad<br/>ugly <p>ok</p>", (), "good bad ugly ok"),
    ("Tom &amp; Jerry &quot;quoted&quot; it&#39;s &#x27;fine&#x27; &lt;3", (),
     "tom jerry quoted it fine 3"),
    ("&amp;quot;double&amp;quot; caf&eacute; &#233;t&#233;", (), "double cafe ete"),
    ("&#0; &#x110000; 9", (), "9"),
    ("Café naïve Ångström façade", (), "cafe naive angstrom facade"),
    ("Straße Æsop", (), "strasse aesop"),
    ("I won't, can't and cannot", (), "i will not can not and can not"),
    ("don't they're I'm we've you'll he'd", (),
     "do not they are i am we have you will he would"),
    ("It's John's phone; let's go", (), "it john phone let us go"),
    ("don\u2019t ain't", (), "do not is not"),
    ("wi-fi!!! great... $20 (really)", (), "wi fi great 20 really"),
    ("great\u2014really \U0001F600 good", (), "great really good"),
    ("x5 4g mp3 player 2019 model 5 stars", (), "player 2019 model 5 stars"),
    ("   lots    of   space   ", (), "lots of space"),
    ("!!! ... ???", (), ""),
    ("<br /><br />", (), ""),
    (None, (), ""),
    ("This is not the best, but I don't hate it", (SW,), "not best not hate"),
    ("No, I never liked it nor its case", (SW,), "no never liked nor case"),
    ("The batteries and boxes for children's classes", (LEM,),
     "the battery and box for child class"),
    ("always news series movies status analysis goes", (LEM,),
     "always news series movies status analysis goes"),
    ("The reviews were useless; phones don't work", (SW, LEM), "review useless phone not work"),
]

FLAG_SETS = list(itertools.product([False, True], [False, True]))


def _flags(names) -> dict:
    return {SW: SW in names, LEM: LEM in names}


@pytest.mark.parametrize("text,flags,expected", HAND_CASES)
def test_hand_table(text, flags, expected):
    assert clean_text(text, **_flags(flags)) == expected


@pytest.mark.parametrize("word,expected", [
    ("batteries", "battery"), ("classes", "class"), ("boxes", "box"), ("watches", "watch"),
    ("dishes", "dish"), ("knives", "knife"), ("women", "woman"), ("cables", "cable"),
    ("status", "status"), ("glass", "glass"), ("bus", "bus"), ("movies", "movies"),
    ("its", "its"), ("was", "was"), ("2019", "2019"),
])
def test_lemma_table(word, expected):
    assert lemma(word) == expected


def test_stopwords_keep_negations():
    assert {"no", "nor", "not", "never"} <= NEGATIONS
    assert not STOPWORDS & {"no", "nor", "not", "never", "don", "isn", "wasn", "won"}
    assert {"the", "a", "is", "do", "can", "will"} <= STOPWORDS


@pytest.mark.parametrize("remove_stopwords,lemmatize", FLAG_SETS)
def test_idempotent_on_hand_table(remove_stopwords, lemmatize):
    for text, _, _ in HAND_CASES:
        once = clean_text(text, remove_stopwords, lemmatize)
        assert clean_text(once, remove_stopwords, lemmatize) == once, text


def _real_bodies(path, limit: int = 2000) -> list[str]:
    """review_body (field 14 of 15) of the first `limit` well-formed rows, read with gzip."""
    bodies = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        next(fh)                                    # header
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 15:
                bodies.append(fields[13])
            if len(bodies) >= limit:
                break
    return bodies


@pytest.mark.parametrize("remove_stopwords,lemmatize", FLAG_SETS)
def test_idempotent_on_real_rows(real_data_path, remove_stopwords, lemmatize):
    bodies = _real_bodies(real_data_path)
    assert len(bodies) >= 1000
    for body in bodies:
        once = clean_text(body, remove_stopwords, lemmatize)
        assert clean_text(once, remove_stopwords, lemmatize) == once, body


FRAGMENTS = [
    "Great", "phone", "DON'T", "won\u2019t", "it's", "&amp;", "&#34;", "&#x27;", "&eacute;",
    "&bogus;", "<br />", "</p>", "a <3 b", "[[VIDEOID:z9]]", "[[a [b]] c]]", "http://x.y/z",
    "www.a.b", "caf\u00e9", "\u00c5NGSTR\u00d6M", "stra\u00dfe", "x5", "4G", "2019",
    "wi-fi", "!!!", "\n", "\r\n", "\t", "\u2028", "\u00a0", "\U0001F600", "\u2014",
    "batteries", "classes", "children's", "not", "the", "I'd", "we'll", "cannot",
    "\u0130stanbul", "\u1e9e", "K\u212a", "&nbsp;", "&#0;", "ma\u00f1ana", "'quoted'",
]


def _generated_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) + rng.choice([" ", "", "  ", ",", "."])
                    for _ in range(rng.randint(0, 12))) for _ in range(n)]


def test_spark_agrees_with_python(spark):
    texts = [t for t, _, _ in HAND_CASES] + _generated_texts(400, seed=3)
    if REAL_DATA.is_file():                      # optional: the generated strings suffice
        texts += _real_bodies(REAL_DATA, limit=600)
    frame = spark.createDataFrame(list(enumerate(texts)), "i int, body string")
    cols = [clean_column("body", sw, lem).alias(f"c{k}") for k, (sw, lem) in enumerate(FLAG_SETS)]
    rows = frame.select("i", *cols).collect()
    assert len(rows) == len(texts)
    mismatches = []
    for row in rows:
        for k, (sw, lem) in enumerate(FLAG_SETS):
            expected = clean_text(texts[row["i"]], sw, lem)
            if row[f"c{k}"] != expected:
                mismatches.append((texts[row["i"]], (sw, lem), row[f"c{k}"], expected))
    assert mismatches == []
    # the DataFrame form (guarded steps, entity UDF only on rows with '&') gives the same
    nulls = spark.createDataFrame([(len(texts), None)], "i int, body string")
    for sw, lem in FLAG_SETS:
        got = {r["i"]: r["text"] for r in
               with_clean_text(frame.unionByName(nulls), "body", ["i"], sw, lem).collect()}
        assert got == {i: clean_text(t, sw, lem) for i, t in enumerate(texts + [None])}

