"""Text normalization of review bodies: one rule list, two engines that give the same result.

``clean_text(s, remove_stopwords, lemmatize)`` is the plain-Python reference (batch scoring,
the pandas benchmark); ``clean_column(col, remove_stopwords, lemmatize)`` builds the same
pipeline from Spark built-in functions, with pandas UDFs for the two steps Spark has no
built-in for (HTML entity decoding, lemmatization); those UDFs call the very Python functions
the reference uses. ``with_clean_text`` applies it to a DataFrame, running each step only on
the texts it can change and the entity UDF only on rows that contain '&' (about 3%). ``with_clean_text`` applies it to a DataFrame and runs the entity UDF only
on rows that contain '&' (about 3% of reviews). The regexes below use only constructs that Java and Python read alike
(explicit ASCII classes, no ``\\b``/``\\s``, line terminators mapped to spaces before any ``.``).

Steps, in order (the order matters, both engines follow it):
 1. lowercase.
 2. line breaks, tabs and other line terminators → space.
 3. ``[[…]]`` tags (``[[VIDEOID:abc]]``, ``[[ASIN:B00X Title [Download]]``) → space.
 4. HTML entities: ``&amp; &quot; &apos; &lt; &gt; &nbsp;`` by regexp_replace (``&amp;`` first,
    so ``&amp;quot;`` decodes fully), then every other named or numeric entity (``&#39;``,
    ``&#x27;``, ``&eacute;``) by a pandas UDF; decoded characters are lowercased; an unknown
    name is left as is (its ``&``/``;`` go in step 9); an invalid code point → space.
 5. HTML tags (``<br />``, ``<p>``, ``<a href=…>``) → space; a ``<`` not followed by a letter
    (``i <3 it``) is not a tag.
 6. URLs: ``http://…``, ``https://…``, ``www.…`` up to the next space → space.
 7. typographic apostrophes (’ ‘ ´ ` ʼ) → ``'``; accents stripped (é→e, ñ→n, ø→o; ß→ss,
    æ→ae, œ→oe, þ→th) by ``translate`` with a table derived from Unicode decompositions.
 8. contractions: won't→will not, can't/cannot→can not, shan't→shall not, ain't→is not,
    let's→let us, then n't→" not", 're→" are", 'm→" am", 've→" have", 'll→" will",
    'd→" would" (it is 'had' as often; 'would' is the usual choice), and 's is DROPPED: it is
    a possessive, 'is' or 'has', and neither reading carries sentiment.
 9. every character other than a-z and 0-9 → space (so "wi-fi" → "wi fi", not "wifi").
10. tokens mixing letters and digits ("x5", "4g", "mp3") are dropped; pure numbers ("5",
    "2019") are KEPT: "1 star", "5 minutes" carry meaning.
11. optional lemmatization (``lemma``): a rule-based English noun lemmatizer standing in
    for NLTK's WordNet lemmatizer with its default noun POS (no WordNet data can be
    downloaded here): irregular plurals, then -sses→-ss, -xes/-ches/-shes/-zzes→drop "es",
    -ies→-y, then a final -s dropped (not after s, u or i: class, status, analysis), for words
    of 4+ letters; stop words, negations and a list of exceptions (always, news, series, movies…)
    are left alone. Applied until nothing changes, so it is idempotent.
12. optional stop-word removal: NLTK's English list minus every negation (no, nor, not, never
    and the n't fragments don/isn/wasn/…); since step 8 turned "don't" into "do not", the
    "not" survives even though "do" goes.
13. spaces collapsed, ends stripped (tokens joined by single spaces).

Idempotent, clean(clean(x)) == clean(x): steps 1-10 and 12 map text made only of single-spaced
[a-z0-9] tokens to itself, and step 11 returns fixed points of its rules (lemmas of lemmas are
the lemmas; they are taken before stop words are removed, so a lemma that is a stop word goes
in the same pass).
"""
from __future__ import annotations

import html.entities
import re
import unicodedata
from functools import lru_cache

import pandas as pd

# --------------------------------------------------------------------------- rule tables
LINE_BREAKS = r"[\r\n\t\f\x0B\u0085\u2028\u2029]"
DOUBLE_BRACKET_TAG = r"\[\[.*?\]\]"
HTML_TAG = r"</?[a-z][a-z0-9]*(?:[ /][^<>]*)?>"
URL = r"(?:https?://|www\.)[^ ]+"
NOT_ALNUM = r"[^a-z0-9]+"
MIXED_TOKEN = r"[a-z][0-9]|[0-9][a-z]"

# Decoded by regexp_replace in Spark (the common ones); '&amp;' first.
COMMON_ENTITIES: tuple[tuple[str, str], ...] = (
    ("&amp;", "&"), ("&quot;", '"'), ("&apos;", "'"), ("&lt;", "<"), ("&gt;", ">"),
    ("&nbsp;", " "),
)
ENTITY = re.compile(r"&(#[0-9]{1,7}|#x[0-9a-f]{1,6}|[a-z][a-z0-9]{1,31});")

_BOUNDARY_L = r"(?<![a-z0-9])"
_BOUNDARY_R = r"(?![a-z0-9])"
CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (_BOUNDARY_L + r"won't" + _BOUNDARY_R, "will not"),
    (_BOUNDARY_L + r"can't" + _BOUNDARY_R, "can not"),
    (_BOUNDARY_L + r"cannot" + _BOUNDARY_R, "can not"),
    (_BOUNDARY_L + r"shan't" + _BOUNDARY_R, "shall not"),
    (_BOUNDARY_L + r"ain't" + _BOUNDARY_R, "is not"),
    (_BOUNDARY_L + r"let's" + _BOUNDARY_R, "let us"),
    (r"(?<=[a-z])n't" + _BOUNDARY_R, " not"),
    (r"(?<=[a-z])'re" + _BOUNDARY_R, " are"),
    (r"(?<=[a-z])'m" + _BOUNDARY_R, " am"),
    (r"(?<=[a-z])'ve" + _BOUNDARY_R, " have"),
    (r"(?<=[a-z])'ll" + _BOUNDARY_R, " will"),
    (r"(?<=[a-z])'d" + _BOUNDARY_R, " would"),
    (r"(?<=[a-z])'s" + _BOUNDARY_R, ""),
)



def _literal(pattern: str) -> str:
    """The fixed text a contraction pattern matches (its look-arounds removed)."""
    text = pattern.replace(_BOUNDARY_L, "").replace(_BOUNDARY_R, "").replace("(?<=[a-z])", "")
    if re.escape(text) != text:
        raise ValueError(f"contraction pattern {pattern!r} is not a literal with look-arounds")
    return text


APOSTROPHES = "\u2019\u2018\u00b4`\u02bc"
# Letters without a one-letter decomposition; ß/æ/œ/þ need two letters (regexp_replace).
_EXTRA_ONE = {"ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "ħ": "h", "Ħ": "h",
              "ŧ": "t", "Ŧ": "t", "ı": "i", "ð": "d", "Ð": "d", "ŀ": "l", "Ŀ": "l"}
MULTI_LETTER: tuple[tuple[str, str], ...] = (
    ("ß", "ss"), ("æ", "ae"), ("Æ", "ae"), ("œ", "oe"), ("Œ", "oe"), ("þ", "th"), ("Þ", "th"),
)


def _accent_table() -> tuple[str, str]:
    """(from, to) strings for translate: Latin-1 and Latin Extended-A/B letters → ASCII."""
    src, dst = [], []
    for code in range(0xC0, 0x250):
        ch = chr(code)
        decomposed = unicodedata.normalize("NFKD", ch)
        base = decomposed[0]
        if (len(decomposed) > 1 and base.isascii() and base.isalpha()
                and all(unicodedata.combining(c) for c in decomposed[1:])):
            src.append(ch)
            dst.append(base.lower())
        elif ch in _EXTRA_ONE:
            src.append(ch)
            dst.append(_EXTRA_ONE[ch])
    src.extend(APOSTROPHES)
    dst.extend("'" * len(APOSTROPHES))
    return "".join(src), "".join(dst)


TRANSLATE_FROM, TRANSLATE_TO = _accent_table()
_TRANSLATE_MAP = str.maketrans(TRANSLATE_FROM, TRANSLATE_TO)

NEGATIONS = frozenset({
    "no", "nor", "not", "never", "none", "nobody", "nothing", "neither", "nowhere",
    "ain", "aren", "couldn", "didn", "doesn", "don", "hadn", "hasn", "haven", "isn", "mightn",
    "mustn", "needn", "shan", "shouldn", "wasn", "weren", "won", "wouldn",
})
# NLTK's English stop-word list (179 words) without the forms containing an apostrophe (step 9
# removes apostrophes, so they cannot occur) and without NEGATIONS.
_NLTK_ENGLISH = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this
that these those am is are was were be been being have has had having do does did doing a an
the and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then
once here there when where why how all any both each few more most other some such no nor not
only own same so than too very s t can will just don should now d ll m o re ve y ain aren
couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn
"""
STOPWORDS = frozenset(_NLTK_ENGLISH.split()) - NEGATIONS

# --------------------------------------------------------------------------- lemmatizer
IRREGULAR_PLURALS = {
    "children": "child", "men": "man", "women": "woman", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "geese": "goose", "lives": "life", "wives": "wife", "knives": "knife",
    "leaves": "leaf", "halves": "half", "shelves": "shelf", "wolves": "wolf",
    "thieves": "thief", "selves": "self", "calves": "calf", "loaves": "loaf",
    "data": "datum", "criteria": "criterion", "phenomena": "phenomenon", "indices": "index",
    "matrices": "matrix", "vertices": "vertex", "analyses": "analysis", "crises": "crisis",
    "theses": "thesis", "diagnoses": "diagnosis", "oxen": "ox", "dice": "die",
}
# Words a suffix rule would break (adverbs, singulars ending in s, -ie nouns).
LEMMA_EXCEPTIONS = frozenset("""
always perhaps towards afterwards backwards forwards upwards downwards sometimes besides
nowadays whereas news series species lens means alias atlas canvas chaos bias pros cons
christmas mathematics physics economics politics ethics gratis thanks yes goes does
movie movies cookie cookies zombie zombies rookie rookies selfie selfies hoodie hoodies
calorie calories pie pies tie ties lie lies freebie freebies newbie newbies genie genies
smoothie smoothies brownie brownies prairie prairies
""".split())
_PROTECTED = STOPWORDS | NEGATIONS | LEMMA_EXCEPTIONS


def _lemma_step(word: str) -> str:
    if word in _PROTECTED or len(word) < 4 or not word.isalpha():
        return word
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith(("xes", "ches", "shes", "zzes")):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=200_000)
def lemma(word: str) -> str:
    """The rule-based lemma of one token (see step 11); a fixed point of the rules."""
    for _ in range(10):                  # every rule shortens or maps to a fixed word
        nxt = _lemma_step(word)
        if nxt == word:
            return word
        word = nxt
    return word


def lemmatize_text(text: str) -> str:
    """Lemma of every space-separated token of an already cleaned text."""
    return " ".join(lemma(tok) for tok in text.split(" ") if tok)


# --------------------------------------------------------------------------- entities
def _entity(match: re.Match) -> str:
    body = match.group(1)
    if body.startswith("#"):
        code = int(body[2:], 16) if body.startswith("#x") else int(body[1:])
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return " "
        return chr(code).lower()
    decoded = html.entities.html5.get(body + ";")
    return match.group(0) if decoded is None else decoded.lower()


def decode_entities(text: str) -> str:
    """Decode every named (HTML5) and numeric entity in lowercased text; see step 4."""
    if "&" not in text:
        return text
    return ENTITY.sub(_entity, text)


# --------------------------------------------------------------------------- reference
_RE = {p: re.compile(p) for p in (LINE_BREAKS, DOUBLE_BRACKET_TAG, HTML_TAG, URL, NOT_ALNUM,
                                  MIXED_TOKEN)}
_CONTRACTIONS = tuple((re.compile(p), r) for p, r in CONTRACTIONS)


def clean_text(text: str | None, remove_stopwords: bool = False, lemmatize: bool = False) -> str:
    """The cleaned form of one review body (module docstring: steps 1–13); None → ''."""
    if text is None:
        return ""
    out = text.lower()
    out = _RE[LINE_BREAKS].sub(" ", out)
    out = _RE[DOUBLE_BRACKET_TAG].sub(" ", out)
    for entity, char in COMMON_ENTITIES:
        out = out.replace(entity, char)
    out = decode_entities(out)
    out = _RE[HTML_TAG].sub(" ", out)
    out = _RE[URL].sub(" ", out)
    out = out.translate(_TRANSLATE_MAP)
    for src, dst in MULTI_LETTER:
        out = out.replace(src, dst)
    for pattern, repl in _CONTRACTIONS:
        out = pattern.sub(repl, out)
    out = _RE[NOT_ALNUM].sub(" ", out)
    tokens = [t for t in out.split(" ") if t and not _RE[MIXED_TOKEN].search(t)]
    if lemmatize:
        tokens = [lemma(t) for t in tokens]
    if remove_stopwords:
        tokens = [t for t in tokens if t not in STOPWORDS]
    return " ".join(tokens)


# --------------------------------------------------------------------------- Spark
def _decode_entities_series(texts: pd.Series) -> pd.Series:
    return texts.map(lambda t: None if t is None else decode_entities(t))


def _lemmatize_series(texts: pd.Series) -> pd.Series:
    return texts.map(lambda t: None if t is None else lemmatize_text(t))


def _pandas_udf(func):
    from pyspark.sql.functions import pandas_udf
    return pandas_udf(func, "string")


def _spark_steps(remove_stopwords: bool, lemmatize: bool) -> list:
    """The Spark pipeline of clean_text as [(guard, step)], each a function of a Column: step
    computes the next value; guard (or None) says which texts the step can change at all (a
    step that finds nothing to replace leaves the text as it is)."""
    from pyspark.sql import functions as F

    def replace_all(pairs):
        def step(value):
            for pattern, repl in pairs:
                value = F.regexp_replace(value, pattern, repl)
            return value
        return step

    def rare_entities(value):
        # Only texts with '&' travel to Python: the others reach the UDF as nulls (a few bytes
        # in the Arrow batch, a None check there) and keep their value.
        decoded = _pandas_udf(_decode_entities_series)(F.when(value.contains("&"), value))
        return F.coalesce(decoded, value)

    steps = [(None, lambda v: F.lower(F.coalesce(v, F.lit("")))),
             (None, replace_all([(LINE_BREAKS, " ")])),
             (lambda v: v.contains("[["), replace_all([(DOUBLE_BRACKET_TAG, " ")])),
             (lambda v: v.contains("&"), replace_all(COMMON_ENTITIES)),
             (None, rare_entities),
        (lambda v: v.contains("<"), replace_all([(HTML_TAG, " ")])),
        (lambda v: v.contains("http") | v.contains("www."), replace_all([(URL, " ")])),
        (None, lambda v: F.translate(v, TRANSLATE_FROM, TRANSLATE_TO)),
        (lambda v: v.rlike("[" + "".join(src for src, _ in MULTI_LETTER) + "]"),
         replace_all(MULTI_LETTER)),
        # one step per contraction, guarded by its literal: a substring search is far cheaper
        # than a regex with look-arounds, and most texts hold one or two kinds at most
        *[(lambda v, lit=_literal(pattern): v.contains(lit), replace_all([(pattern, repl)]))
          for pattern, repl in CONTRACTIONS],
        (None, replace_all([(NOT_ALNUM, " ")])),
        (None, lambda v: F.array_join(
            F.filter(F.split(v, " "), lambda t: (t != "") & ~t.rlike(MIXED_TOKEN)), " ")),
    ]
    if lemmatize:
        steps.append((None, lambda v: _pandas_udf(_lemmatize_series)(v)))
    if remove_stopwords:
        steps.append((None, lambda v: F.array_join(
            F.filter(F.split(v, " "), lambda t: (t != "") & ~t.isin(*sorted(STOPWORDS))), " ")))
    return steps


def clean_column(text, remove_stopwords: bool = False, lemmatize: bool = False):
    """Spark Column: the cleaned form of column `text` (name or Column), same as clean_text.

    A null input gives '' like the reference. One expression with every step applied to every
    row (except the entity UDF, which gets only texts with '&'); with_clean_text is the faster
    form for a DataFrame.
    """
    from pyspark.sql import functions as F

    out = F.col(text) if isinstance(text, str) else text
    for _, step in _spark_steps(remove_stopwords, lemmatize):
        out = step(out)
    return out


def with_clean_text(rows, source_col: str, columns: list[str], remove_stopwords: bool = False,
                    lemmatize: bool = False, text_col: str = "text"):
    """rows → columns + text_col, the cleaned source_col (clean_column's result, faster).

    A step runs only on the texts its guard admits (most reviews have no tag, URL, entity or
    apostrophe), each guarded step in a projection of its own so the text it reads is computed
    once (nesting the CASE WHENs in one expression repeats it below every level); the entity
    UDF gets only texts with '&' (every row through Arrow to Python and back was a quarter of
    the cleaning time). A null source is cleaned to '' like the reference.
    """
    from pyspark.sql import functions as F

    frame = rows.select(*[F.col(c) for c in columns], F.col(source_col).alias(text_col))
    for guard, step in _spark_steps(remove_stopwords, lemmatize):
        value = F.col(text_col)
        frame = frame.withColumn(text_col, step(value) if guard is None else
                                 F.when(guard(value), step(value)).otherwise(value))
    return frame
