"""Synthetic amazon_reviews_us reviews: deterministic, block-seeded, partition-independent.

Row ``i`` belongs to block ``i // BLOCK_ROWS``; everything about the row comes from a numpy
``PCG64`` stream seeded by ``(seed, block)`` (draws are always made for a full block, so row ``i``
does not depend on the corpus size either: a smaller corpus is a prefix of a larger one) and,
for duplicate review_ids, from a hash of ``(seed, i)`` that any block can evaluate for any row.
So the text of a corpus depends on (seed, rows, part_files, parameters) only, never on how
many Spark partitions generated it.

Text model (see docs/corpus.md): the written star comes from ``star_mix``; the text is written
for a "text star" equal to it, or one step away for a ``label_noise`` share of rows. A body is
an opening phrase plus sentences drawn from template groups (plain opinion, negated opinion,
contrast "... at first but ...", mixed, neutral filler) whose mix depends on the text star,
cut to a lognormal word count. Dirt is injected at per-row rates into the body and star fields
only; clean text never contains any dirt marker, so each kind is countable in the output.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from itertools import chain
from typing import Iterable, Iterator

import numpy as np

BLOCK_ROWS = 1024                      # rows per RNG block: the unit of determinism
COLUMNS = ("marketplace", "customer_id", "review_id", "product_id", "product_parent",
           "product_title", "product_category", "star_rating", "helpful_votes", "total_votes",
           "vine", "verified_purchase", "review_headline", "review_body", "review_date")
HEADER = "\t".join(COLUMNS)
DIRT_KINDS = ("html_entity", "line_break", "url", "video_tag", "empty_body", "extra_field",
              "bad_star", "duplicate_id")
# Dirt kinds that live inside the body: impossible on an empty body, so their rate is scaled
# by 1 / (1 - empty_body) on non-empty rows to keep the configured rate the marginal rate.
BODY_DIRT = ("html_entity", "line_break", "url", "video_tag", "extra_field")
BAD_STARS = ("0", "6", "", "five")
CATEGORY = "Wireless"
QUOTE_START_RATE = 0.01                # bodies opening with '"' (never quoted; a real quirk)
LENGTH_MU = float(np.log(35.0))        # lognormal word count: median 35 words
LENGTH_SIGMA = 0.80                    # p90 ≈ 98 words, ~0.05% of bodies past 500 words
LENGTH_MAX = 3000
N_PRODUCTS = 20000
LAST_DAY = np.datetime64("2015-08-31")
FIRST_DAY = np.datetime64("1999-06-01")
GENERATOR_VERSION = 1
_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class CorpusParams:
    """What the generated text depends on (besides the row count and part files)."""
    seed: int
    label_noise: float
    star_mix: tuple[float, ...]
    dirt: tuple[tuple[str, float], ...]      # (kind, per-row rate) for every DIRT_KINDS entry

    @staticmethod
    def make(seed: int, label_noise: float, star_mix: Iterable[float],
             dirt: dict[str, float]) -> "CorpusParams":
        missing = [k for k in DIRT_KINDS if k not in dirt]
        if missing:
            raise ValueError(f"corpus.dirt: missing rates for {missing}")
        mix = tuple(float(p) for p in star_mix)
        if len(mix) != 5 or any(p < 0 for p in mix) or abs(sum(mix) - 1) > 1e-6:
            raise ValueError(f"corpus.star_mix: need 5 non-negative shares summing to 1, got {mix}")
        return CorpusParams(int(seed), float(label_noise), mix,
                            tuple((k, float(dirt[k])) for k in DIRT_KINDS))

    def rate(self, kind: str) -> float:
        return dict(self.dirt)[kind]


# --------------------------------------------------------------------------- vocabulary
# Graded sentiment lexicon (real English words): +2 strong positive ... -2 strong negative.
P2 = ("excellent amazing awesome perfect fantastic outstanding superb wonderful flawless brilliant "
      "incredible terrific exceptional phenomenal stellar marvelous magnificent splendid fabulous "
      "remarkable impressive great superior unbeatable exquisite spectacular top-notch first-rate "
      "delightful glorious sensational tremendous extraordinary ideal stunning heavenly").split()
P1 = ("good nice decent solid fine handy reliable sturdy comfortable clear useful convenient fast "
      "easy sleek pleasant functional compact durable responsive quick bright helpful satisfying "
      "worthwhile affordable cute stylish snug secure effective smooth accurate dependable "
      "lightweight practical neat tidy crisp efficient versatile attractive classy capable "
      "cool fair well-made long-lasting user-friendly intuitive pretty sharp").split()
NEU = ("okay average acceptable so-so ordinary standard passable adequate basic generic typical "
       "plain middling unremarkable serviceable tolerable usable reasonable moderate").split()
N1 = ("poor flimsy cheap weak slow disappointing mediocre annoying loose noisy unreliable awkward "
      "bulky clunky faulty fragile inconsistent overpriced underwhelming subpar sluggish dim "
      "scratchy uncomfortable frustrating inferior lacking spotty unstable wobbly finicky "
      "confusing glitchy lackluster tacky thin stiff slippery dull choppy muffled").split()
N2 = ("terrible awful horrible useless worthless defective pathetic dreadful atrocious abysmal "
      "horrendous lousy shoddy dismal unusable broken appalling dangerous ridiculous garbage "
      "disgraceful infuriating miserable hopeless laughable rubbish crappy dead").split()
AP2 = "perfectly flawlessly beautifully wonderfully brilliantly superbly great amazingly".split()
AP1 = "well fine reliably nicely smoothly properly okay decently consistently quickly".split()
AN1 = "poorly badly slowly inconsistently intermittently sporadically".split()
AN2 = "terribly horribly awfully erratically miserably dreadfully".split()
VBP = "love enjoy recommend like appreciate adore".split()
VBN = "hate regret dislike despise resent".split()
EMOP = "impressed pleased satisfied happy thrilled delighted".split()
EMON = "disappointed frustrated annoyed unhappy upset dissatisfied".split()
INT = "very really extremely super pretty quite so incredibly absolutely totally truly".split()
NOUN = ("phone case;charger;cable;battery;screen protector;headset;adapter;car mount;speaker;"
        "earbud case;holster;stylus;power bank;dock;cord;belt clip;cover;antenna;signal booster;"
        "wall charger;car charger;usb cable;bluetooth headset;armband;selfie stick;wallet case;"
        "bumper;kickstand;earpiece;charging pad;battery case;replacement battery;sim adapter;"
        "tempered glass;lanyard;holder;cradle;splitter;mount;flip case;skin;pouch;hands-free kit;"
        "micro usb cable;charging station;desk stand;travel charger;headphone jack adapter;"
        "tripod").split(";")
FEAT = ("fit;sound quality;battery life;signal;price;color;design;build quality;grip;power button;"
        "cable length;charging speed;range;volume;microphone;packaging;manual;finish;"
        "texture;clip;magnet;connector;port;camera cutout;edge;screen;plastic;rubber;seal;hinge;"
        "size;weight;bluetooth connection;pairing;led light;charging port;warranty;"
        "customer service;shipping;material").split(";")
DEV = ("iPhone;iPhone 5;iPhone 6;iPhone 6 Plus;Galaxy S4;Galaxy S5;Galaxy Note 3;Galaxy Note 4;"
       "HTC One;Moto X;Moto G;LG G3;Nexus 5;Nokia Lumia;BlackBerry;Kindle;iPad;iPad mini;"
       "Droid;tablet;laptop;old flip phone;work phone").split(";")
TIME = ("after a week;within two days;after a month;after three weeks;after two months;the "
        "second day;after a few uses;within an hour;after the first charge;a week later;"
        "after six weeks;on the first day;after ten days;after a couple of months").split(";")
AGO = ("a week ago;a month ago;last year;two months ago;last Christmas;a few days ago;"
       "in the spring;last summer;three weeks ago;a while back").split(";")
EVENT = ("it died;it stopped charging;the clip snapped;it fell apart;it quit working;the "
         "cable frayed;the screen cracked;it stopped pairing;the battery swelled;it overheated;"
         "the port came loose;the coating peeled off;it started buzzing;"
         "the connection dropped").split(";")
COLOR = "black white red blue pink purple green gold silver gray orange yellow teal navy".split()
PLACE = "car office kitchen gym bedroom truck garage classroom".split()
NUM = "two three four five six seven ten 2 3 4 5 7".split()
VNEU = "covers protects holds charges connects matches replaces supports".split()
W = ("wife husband son daughter mother father brother sister friend boss coworker kid kids "
     "grandson granddaughter neighbor roommate girlfriend boyfriend nephew niece teenager "
     "family team sister-in-law mom dad grandma grandpa partner").split()
STAR_WORDS = ("One Star", "Two Stars", "Three Stars", "Four Stars", "Five Stars")

# Deterministic pseudo-words (brand/model-like, neutral): they make the vocabulary a few
# thousand words with a long, Zipf-like tail, as real review text has.
_ONSETS = "b c d f g k l m n p r s t v z br cl dr fl gr kr pl pr st tr sk sn zv qu x".split()
_NUCLEI = "a e i o u ai ea ou io y".split()
_CODAS = ["", "", "n", "r", "x", "l", "s", "k", "m", "nt", "rk", "st", "ll", "v"]
N_PSEUDO = 4000


def _pseudo_words() -> tuple[str, ...]:
    rng = np.random.Generator(np.random.PCG64(20240601))   # fixed: the same words for any seed
    real = set(" ".join(P2 + P1 + NEU + N1 + N2 + W + COLOR + INT).split())
    m = 4 * N_PSEUDO
    syl = [np.array(_ONSETS, dtype=object)[rng.integers(0, len(_ONSETS), m)]
           + np.array(_NUCLEI, dtype=object)[rng.integers(0, len(_NUCLEI), m)] for _ in range(3)]
    three = rng.random(m) < 0.5
    coda = np.array(_CODAS, dtype=object)[rng.integers(0, len(_CODAS), m)]
    cands = np.where(three, syl[0] + syl[1] + syl[2], syl[0] + syl[1]) + coda
    out = [w for w in dict.fromkeys(cands.tolist())
           if w not in real and "http" not in w and len(w) >= 4]
    if len(out) < N_PSEUDO:
        raise RuntimeError(f"only {len(out)} pseudo-words; raise the candidate count")
    return tuple(out[:N_PSEUDO])


PSEUDO = _pseudo_words()

# Template groups. {P}/{N}/{AP} become the strong (P2/N2/AP2) or mild (P1/N1/AP1) lists.
_OPEN = {
    5: ["{P2}!", "{P2} {NOUN}.", "Love it!", "{INT} {P2}.", "Works {AP2}.", "{P2} product.",
        "Highly recommended.", "{P2} {NOUN}!", "Just {P2}.", "Not {N2} at all!"],
    4: ["{P1} {NOUN}.", "Pretty {P1}.", "Works well.", "{P1} overall.", "Does the job well.",
        "Very {P1}.", "{P1} product.", "Mostly {P1}.", "Not {N1} at all."],
    3: ["It's {NEU}.", "{NEU} {NOUN}.", "Does the job.", "{NEU} at best.", "Not {P2}, not {N2}.",
        "Mixed feelings.", "Just {NEU}.", "{NEU} product."],
    2: ["{N1} {NOUN}.", "Not {P1}.", "Kind of {N1}.", "Pretty {N1}.", "Disappointed.",
        "Rather {N1}.", "{N1} product.", "Not {P1} at all."],
    1: ["{N2}!", "{N2} {NOUN}.", "Don't buy this.", "Total junk.", "{INT} {N2}.",
        "Waste of money.", "{N2} product.", "Not {P2} at all!"],
}
# Sentence frames. A polar slot takes the group's polarity: {S} adjective, {SV} adverb, {SE}
# emotion, {SB} verb; {T...} is the opposite polarity (mild). Plain frames say S; negated frames
# mean the opposite of S ("not bad at all"); contrast frames say T first, then S ("great at
# first but ..."). Each frame family serves both polarities with the same literal words, so
# the polarity of a sentence shows in which word is negated or comes last, not in which words
# occur: a bag of words sees little of it, word order a lot.
_PLAIN = ["The {NOUN} is {INT} {S}.", "This {NOUN} works {SV} with my {DEV}.",
          "I {SB} this {NOUN}.", "The {FEAT} is {S}.", "It fits my {DEV} {SV}.",
          "{S} {FEAT} and {S} {FEAT}.", "The {FEAT} is {INT} {S} for the price.",
          "My {W} thinks it is {S} too.", "So far the {FEAT} has been {S}.",
          "I was {SE} with the {FEAT}.", "Mine arrived {S} and {S}."]
_NEGATED = ["The {FEAT} is not {S} at all.", "Not {S} at all.", "I was not {SE} with the {FEAT}.",
            "It isn't {S} like some reviews say.", "I don't {SB} this {NOUN}.",
            "The {FEAT} is never {S}.", "I can't say the {FEAT} is {S}.",
            "Nothing about the {FEAT} is {S}.", "It doesn't work {SV} with my {DEV}.",
            "The {NOUN} is not {INT} {S}."]
_CONTRAST = ["It was {T} at first but then the {FEAT} became {S}.",
             "The {FEAT} is {T} but the {FEAT} is {S}.", "It looks {T} but it works {SV}.",
             "Setup was {T} but after that it was {S}.", "I was {TE} at first but now I am {SE}.",
             "I expected {T} {FEAT} but it turned out {S}.",
             "At first the {FEAT} seemed {T}, but {TIME} it is {S}."]
_GROUPS = {
    "pos": _PLAIN, "neg": _PLAIN, "negpos": _NEGATED, "negneg": _NEGATED,
    "cpos": _CONTRAST + ["My old one {EVENT} {TIME} but this one is {S}."],
    "cneg": _CONTRAST + ["It was {T} at first but {EVENT} {TIME}."],
    "mixed": ["The {FEAT} is {P1} but the {FEAT} is {N1}.", "It's {NEU}, nothing special.",
              "It does the job but it is {N1}.", "Not {P2} but not {N2} either.",
              "The {FEAT} is {NEU} for the price.", "Some things are {P1} and some are {N1}.",
              "The {FEAT} is {NEU} and the {FEAT} is {NEU}.", "It works {AP1} but it is {N1}."],
    "neutral": ["I bought this for my {W} {AGO}.", "I use it with my {DEV} every day.",
                "It came in a {COLOR} box with a {NOUN}.", "The {PSEUDO} {NOUN} fits my {DEV}.",
                "I ordered the {COLOR} one.", "It took {NUM} days to arrive.",
                "My {W} has the {PSEUDO} model.", "I mostly use it in the {PLACE}.",
                "The {NOUN} has a {FEAT} and a {FEAT}.",
                "I compared it with the {PSEUDO} {NOUN} before buying.",
                "It {VNEU} the {FEAT} like the {PSEUDO} does.",
                "I got it from {PSEUDO} {AGO}.", "The {PSEUDO} version came with a {NOUN}.",
                "I keep it in the {PLACE} next to the {PSEUDO} {NOUN}."],
}
# Sign of the words in {S} slots per group (+1 positive lists, -1 negative); 0: no polar slots.
_WORD_SIGN = {"pos": 1, "neg": -1, "negpos": -1, "negneg": 1, "cpos": 1, "cneg": -1,
              "mixed": 0, "neutral": 0}
_SENT_GROUPS = ("pos", "neg", "negpos", "negneg", "cpos", "cneg", "mixed", "neutral")
# Share of each sentence group by text star (rows: stars 1..5; columns: _SENT_GROUPS).
_GROUP_MIX = np.array([
    # Negated and contrast sentences carry the opposite polarity's words, so a star's
    # positive and negative word counts are close: a bag of words sees little, order a lot.
    # pos   neg  negpos negneg cpos  cneg mixed neutral
    [0.00, 0.26, 0.00, 0.20, 0.02, 0.16, 0.00, 0.36],   # 1
    [0.02, 0.20, 0.03, 0.16, 0.04, 0.14, 0.09, 0.32],   # 2
    [0.08, 0.08, 0.07, 0.07, 0.08, 0.08, 0.28, 0.26],   # 3
    [0.20, 0.02, 0.16, 0.03, 0.14, 0.04, 0.09, 0.32],   # 4
    [0.26, 0.00, 0.20, 0.00, 0.16, 0.02, 0.00, 0.36],   # 5
])
# Probability that a sentence uses the strong word lists (P2/N2/AP2), by text star.
_STRONG = np.array([0.7, 0.3, 0.2, 0.3, 0.7])
_HEADLINE_AUTO = 0.3                    # share of "Five Stars"-style headlines (written star)

_SLOTS: dict[str, tuple[str, ...]] = {
    "P2": tuple(P2), "P1": tuple(P1), "NEU": tuple(NEU), "N1": tuple(N1), "N2": tuple(N2),
    "AP2": tuple(AP2), "AP1": tuple(AP1), "AN1": tuple(AN1), "AN2": tuple(AN2),
    "VBP": tuple(VBP), "VBN": tuple(VBN), "EMOP": tuple(EMOP), "EMON": tuple(EMON),
    "INT": tuple(INT), "NOUN": tuple(NOUN),
    "FEAT": tuple(FEAT), "DEV": tuple(DEV), "TIME": tuple(TIME), "AGO": tuple(AGO),
    "EVENT": tuple(EVENT), "COLOR": tuple(COLOR), "PLACE": tuple(PLACE), "NUM": tuple(NUM),
    "VNEU": tuple(VNEU), "W": tuple(W), "PSEUDO": PSEUDO,
}
_SLOT_NAMES = tuple(_SLOTS)
_SLOT_ID = {name: k for k, name in enumerate(_SLOT_NAMES)}
_SLOT_ARR = [np.array(_SLOTS[n], dtype=object) for n in _SLOT_NAMES]
_SLOT_WC = [np.array([len(w.split()) for w in _SLOTS[n]], dtype=np.int64) for n in _SLOT_NAMES]
_SLOT_LEN = np.array([len(_SLOTS[n]) for n in _SLOT_NAMES], dtype=np.int64)
_SLOT_WC_FLAT = np.concatenate(_SLOT_WC)
_SLOT_OFFSET = np.concatenate([[0], np.cumsum(_SLOT_LEN)[:-1]]).astype(np.int64)
_SLOT_ZIPF = np.array([n == "PSEUDO" for n in _SLOT_NAMES])
_MAX_SLOTS = 4


def _resolve(tpl: str, sign: int, strong: bool) -> str:
    """Replace the polar slots of a frame by word lists of the given sign and strength."""
    k = "2" if strong else "1"
    same = {"S": ("P" if sign > 0 else "N") + k, "SV": ("AP" if sign > 0 else "AN") + k,
            "SE": "EMOP" if sign > 0 else "EMON", "SB": "VBP" if sign > 0 else "VBN"}
    other = {"T": "N1" if sign > 0 else "P1", "TV": "AN1" if sign > 0 else "AP1",
             "TE": "EMON" if sign > 0 else "EMOP"}
    for name, slot in {**same, **other}.items():
        tpl = tpl.replace("{" + name + "}", "{" + slot + "}")
    return tpl


class _Templates:
    """Templates flattened into arrays: group g → templates [start[g], start[g] + size[g])."""

    def __init__(self, groups: list[list[str]]):
        self.texts: list[str] = []
        self.formats: list[str] = []             # the template with positional slots
        self.slots: list[list[int]] = []
        self.start, self.size = [], []
        for tpls in groups:
            self.start.append(len(self.texts))
            self.size.append(len(tpls))
            for tpl in tpls:
                names = [f for _, f, _, _ in string.Formatter().parse(tpl) if f]
                if len(names) > _MAX_SLOTS:
                    raise ValueError(f"template {tpl!r} has more than {_MAX_SLOTS} slots")
                self.texts.append(tpl)
                self.formats.append(re.sub(r"\{[A-Z0-9]+\}", "{}", tpl))
                self.slots.append([_SLOT_ID[n] for n in names])
        n = len(self.texts)
        self.start = np.array(self.start, dtype=np.int64)
        self.size = np.array(self.size, dtype=np.int64)
        self.slot_mat = np.full((n, _MAX_SLOTS), -1, dtype=np.int64)
        for t, ids in enumerate(self.slots):
            self.slot_mat[t, :len(ids)] = ids
        # Words of the template with each slot counted as one word; a slot adds wc(item) - 1.
        self.base_wc = np.array([len(t.split()) for t in self.texts], dtype=np.int64)

    def pick(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self.start[group] + np.minimum((u * self.size[group]).astype(np.int64),
                                              self.size[group] - 1)

    def word_counts(self, tpl: np.ndarray, slot_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item index per slot, words per sentence) for templates tpl and slot uniforms."""
        slot_ids = self.slot_mat[tpl]                            # (n, MAX_SLOTS), -1 = none
        used = slot_ids >= 0
        sid = np.where(used, slot_ids, 0)
        n_items = _SLOT_LEN[sid]
        u = np.where(_SLOT_ZIPF[sid], slot_u ** 3, slot_u)   # PSEUDO: a Zipf-like long tail
        items = np.minimum((u * n_items).astype(np.int64), n_items - 1)
        extra = np.where(used, _SLOT_WC_FLAT[_SLOT_OFFSET[sid] + items] - 1, 0)
        return items, self.base_wc[tpl] + extra.sum(axis=1)

    def render(self, tpl: np.ndarray, items: np.ndarray) -> list[str]:
        out: list[str] = [""] * len(tpl)
        order = np.argsort(tpl, kind="stable")
        bounds = np.flatnonzero(np.diff(tpl[order])) + 1
        for rows in np.split(order, bounds):
            if not len(rows):
                continue
            t = int(tpl[rows[0]])
            fmt = self.formats[t].format
            names = [_SLOT_NAMES[s] for s in self.slots[t]]
            cols = [_SLOT_ARR[_SLOT_ID[n]][items[rows, k]] for k, n in enumerate(names)]
            if not cols:
                for r in rows:
                    out[r] = self.texts[t]
                continue
            for r, words in zip(rows.tolist(), zip(*cols)):
                out[r] = fmt(*words)
        return out


_OPEN_T = _Templates([_OPEN[s] for s in (1, 2, 3, 4, 5)])
_SENT_GROUP_LIST = [[_resolve(t, _WORD_SIGN[g], strong) for t in _GROUPS[g]]
                    for strong in (False, True) for g in _SENT_GROUPS]
_SENT_T = _Templates(_SENT_GROUP_LIST)   # group id = strong * len(_SENT_GROUPS) + group


def vocabulary() -> set[str]:
    """Every lower-cased word the clean generator can emit (templates' words and slot items)."""
    words: set[str] = set()
    for tpl in _OPEN_T.texts + _SENT_T.texts:
        words.update(_words(re.sub(r"\{[A-Z0-9]+\}", " ", tpl)))
    for items in _SLOTS.values():
        for item in items:
            words.update(_words(item))
    return words


def _words(text: str) -> list[str]:
    out = []
    for w in text.lower().split():
        w = w.strip(".,!?\"'")
        if w and "{" not in w:
            out.append(w)
    return out


# --------------------------------------------------------------------------- hashing
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection on uint64."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _key(seed: int, stream: int) -> np.uint64:
    return _mix64(np.array([(seed * 0x9E3779B97F4A7C15 + stream) & _M64], dtype=np.uint64))[0]


def _unit(seed: int, stream: int, idx: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per row index, a pure function of (seed, stream, index)."""
    with np.errstate(over="ignore"):
        h = _mix64(idx.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + _key(seed, stream))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_B36 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)


def _base36(x: np.ndarray, digits: int) -> list[str]:
    x = x.astype(np.uint64).copy()
    codes = np.empty((len(x), digits), dtype=np.uint8)
    for k in range(digits - 1, -1, -1):
        codes[:, k] = _B36[(x % np.uint64(36)).astype(np.int64)]
        x //= np.uint64(36)
    return [b.decode() for b in codes.view(f"S{digits}").ravel()]


def review_ids(seed: int, idx: np.ndarray) -> list[str]:
    """'R' + base-36 of a seeded bijection of the row index: unique for distinct rows."""
    with np.errstate(over="ignore"):
        h = _mix64(idx.astype(np.uint64) + _key(seed, 1))
    return ["R" + s.lstrip("0") for s in _base36(h, 13)]


def duplicate_sources(seed: int, rate: float, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_duplicate, source row) per row index: a duplicate reuses the review_id of an earlier
    non-duplicate row (its own target, or the target's source, followed down the chain)."""
    idx = np.asarray(idx, dtype=np.int64)

    def is_dup(i):
        return (_unit(seed, 2, i) < rate) & (i > 0)

    def target(i):
        return np.minimum((_unit(seed, 3, i) * i).astype(np.int64), i - 1)

    dup = is_dup(idx)
    src = idx.copy()
    todo = dup.copy()
    while todo.any():
        src[todo] = target(src[todo])
        todo[todo] = is_dup(src[todo])
    return dup, src


# --------------------------------------------------------------------------- one block
def _rng(seed: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & _M64, block, 17])))


def _plan(params: CorpusParams, block: int) -> tuple[dict[str, np.ndarray], np.random.Generator]:
    """Per-row decisions of a full block (stars, lengths, dirt) and the stream to continue."""
    rng = _rng(params.seed, block)
    n = BLOCK_ROWS
    idx = block * n + np.arange(n, dtype=np.int64)
    cdf = np.cumsum(params.star_mix)
    written = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), 4) + 1
    noisy = rng.random(n) < params.label_noise
    up = rng.random(n) < 0.5
    step = np.where(written == 1, 1, np.where(written == 5, -1, np.where(up, 1, -1)))
    text_star = np.where(noisy, written + step, written)
    length = np.clip(np.rint(rng.lognormal(LENGTH_MU, LENGTH_SIGMA, n)), 1, LENGTH_MAX)
    u = rng.random((n, len(DIRT_KINDS)))
    flags = {}
    empty = u[:, DIRT_KINDS.index("empty_body")] < params.rate("empty_body")
    body_scale = 1.0 / max(1e-12, 1.0 - params.rate("empty_body"))
    for k, kind in enumerate(DIRT_KINDS):
        if kind in BODY_DIRT:
            flags[kind] = (u[:, k] < params.rate(kind) * body_scale) & ~empty
    flags["empty_body"] = empty
    flags["bad_star"] = u[:, DIRT_KINDS.index("bad_star")] < params.rate("bad_star")
    dup, src = duplicate_sources(params.seed, params.rate("duplicate_id"), idx)
    flags["duplicate_id"] = dup
    plan = {"idx": idx, "written": written, "text_star": text_star, "noisy": noisy,
            "length": length.astype(np.int64), "dup_src": src,
            "quote": (rng.random(n) < QUOTE_START_RATE) & ~empty,
            "bad_star_kind": rng.integers(0, len(BAD_STARS), n),
            **{"dirt_" + k: v for k, v in flags.items()}}
    return plan, rng


def block_stats(params: CorpusParams, block: int, rows: int) -> dict[str, int]:
    """Counts over the block's rows below `rows`: dirt injected, stars written and of the text."""
    plan, _ = _plan(params, block)
    n = max(0, min(BLOCK_ROWS, rows - block * BLOCK_ROWS))
    valid = ~plan["dirt_bad_star"][:n]
    out = {f"dirt.{k}": int(plan["dirt_" + k][:n].sum()) for k in DIRT_KINDS}
    for s in range(1, 6):
        out[f"star.{s}"] = int(((plan["written"][:n] == s) & valid).sum())
        out[f"text_star.{s}"] = int((plan["text_star"][:n] == s).sum())
    out["label_noise_rows"] = int(plan["noisy"][:n].sum())
    out["quote_start_rows"] = int(plan["quote"][:n].sum())
    out["rows"] = n
    return out


@dataclass(frozen=True)
class _Catalog:
    asin: list[str]
    parent: list[str]
    title: list[str]


_CATALOGS: dict[int, _Catalog] = {}
_TYPES = ("Case", "Car Charger", "Wall Charger", "USB Cable", "Screen Protector",
          "Bluetooth Headset",
          "Car Mount", "Power Bank", "Holster", "Stylus", "Armband", "Battery", "Earbuds",
          "Wallet Case", "Charging Dock", "Selfie Stick", "Signal Booster", "Tempered Glass")


def _catalog(seed: int) -> _Catalog:
    """N_PRODUCTS products of a seed (ASIN, parent, title), built once per worker process."""
    if seed not in _CATALOGS:
        p = np.arange(N_PRODUCTS, dtype=np.int64)
        asin = ["B00" + s for s in _base36(_mix64(p.astype(np.uint64) + _key(seed, 4)), 13)]
        asin = [a[:3] + a[-7:] for a in asin]
        parent = (_unit(seed, 5, p) * 9e8 + 1e8).astype(np.int64).astype(str).tolist()
        u = [_unit(seed, 6 + k, p) for k in range(5)]
        brand = [PSEUDO[int(x * 300)].capitalize() for x in u[0]]
        model = [chr(65 + int(x * 26)) + str(10 + int(y * 990)) for x, y in zip(u[1], u[2])]
        typ = [_TYPES[int(x * len(_TYPES))] for x in u[3]]
        dev = [DEV[int(x * len(DEV))] for x in u[4]]
        col = [COLOR[int(x * len(COLOR))].capitalize() for x in _unit(seed, 11, p)]
        title = [f"{b} {m} {t} for {d} - {c}" for b, m, t, d, c in zip(brand, model, typ, dev, col)]
        _CATALOGS[seed] = _Catalog(asin, parent, title)
    return _CATALOGS[seed]


def _bodies(plan: dict, rng: np.random.Generator, n: int) -> list[str]:
    """Clean bodies of the first n rows (draws are made for the full block)."""
    b = BLOCK_ROWS
    t_idx = plan["text_star"] - 1
    # Opening phrase: group = text star; never cut.
    o_tpl = _OPEN_T.pick(t_idx, rng.random(b))
    o_items, o_wc = _OPEN_T.word_counts(o_tpl, rng.random((b, _MAX_SLOTS)))
    need = np.maximum(plan["length"] - o_wc, 0)
    # Enough sentence draws to cover any length (every sentence has >= 3 words).
    k = need // 3 + 1
    row_of = np.repeat(np.arange(b), k)
    m = len(row_of)
    g_cdf = np.cumsum(_GROUP_MIX, axis=1)[t_idx[row_of]]
    group = np.minimum((g_cdf < rng.random(m)[:, None]).sum(axis=1), len(_SENT_GROUPS) - 1)
    strong = rng.random(m) < _STRONG[t_idx[row_of]]
    s_tpl = _SENT_T.pick(group + strong * len(_SENT_GROUPS), rng.random(m))
    s_items, s_wc = _SENT_T.word_counts(s_tpl, rng.random((m, _MAX_SLOTS)))
    # Keep whole sentences up to the boundary nearest the drawn length (a sentence stays when
    # more than half of it falls inside the length), so bodies end where sentences end.
    starts = np.concatenate([[0], np.cumsum(k)[:-1]])
    cum = np.cumsum(s_wc)
    before = cum - s_wc - np.repeat(np.concatenate([[0], cum])[starts], k)
    keep = (2 * before + s_wc < 2 * need[row_of]) & (row_of < n)
    sel = np.flatnonzero(keep)
    texts = _SENT_T.render(s_tpl[sel], s_items[sel])
    parts: list[list[str]] = [[o] for o in _OPEN_T.render(o_tpl[:n], o_items[:n])]
    for r in np.flatnonzero(plan["quote"][:n]).tolist():
        parts[r][0] = '"' + parts[r][0] + '"'
    for r, text in zip(row_of[sel].tolist(), texts):
        parts[r].append(text)
    return [" ".join(p) for p in parts]


def _dirty(body: str, r: int, plan: dict, u: np.ndarray, tags: list[str]) -> str:
    """Inject the row's body dirt (flags in plan) using the row's uniforms u."""
    if plan["dirt_empty_body"][r]:
        return ""
    toks = body.split(" ")
    if plan["dirt_url"][r]:
        url = (f"http://www.amazon.com/dp/{tags[0][:10]}" if u[0] < 0.5 else
               f"https://www.youtube.com/watch?v={tags[1][:11]}")
        toks.insert(int(u[1] * (len(toks) + 1)), url)
    if plan["dirt_html_entity"][r]:
        pos = int(u[2] * len(toks))
        kind = int(u[3] * 4)
        if kind == 0:
            toks.insert(pos, "&amp;")
        elif kind == 1:
            toks[pos] = "&quot;" + toks[pos] + "&quot;"
        elif kind == 2:
            toks[pos] = "&#34;" + toks[pos] + "&#34;"
        else:
            toks[pos] = toks[pos] + "&#39;s"
    seps = [" "] * (len(toks) - 1)
    used = -1
    if plan["dirt_line_break"][r]:
        br = "<br />" if u[4] < 0.6 else "<br /><br />"
        if seps:
            used = int(u[5] * len(seps))
            seps[used] = br
        else:
            toks[-1] += br
    if plan["dirt_extra_field"][r]:
        free = [j for j in range(len(seps)) if j != used]
        if free:
            seps[free[int(u[6] * len(free))]] = "\t"
        else:
            toks[-1] += "\t"
    text = toks[0] + "".join(s + t for s, t in zip(seps, toks[1:]))
    if plan["dirt_video_tag"][r]:
        text = "[[VIDEOID:" + tags[2] + "]]" + text
    return text


def block_lines(params: CorpusParams, block: int, rows: int) -> list[str]:
    """The TSV lines (no newline) of the block's rows below `rows`, in row order."""
    n = max(0, min(BLOCK_ROWS, rows - block * BLOCK_ROWS))
    plan, rng = _plan(params, block)
    b = BLOCK_ROWS
    cat = _catalog(params.seed)
    product = np.minimum((N_PRODUCTS * rng.random(b) ** 3).astype(np.int64), N_PRODUCTS - 1)
    customer = rng.integers(10000, 53_100_000, b)
    total = np.where(rng.random(b) < 0.55, 0,
                     np.floor(np.exp(rng.normal(0.6, 1.1, b))).astype(np.int64) + 1)
    helpful = rng.binomial(total, np.where(plan["written"] >= 4, 0.8, 0.55))
    vine = np.where(rng.random(b) < 0.004, "Y", "N")
    verified = np.where(rng.random(b) < 0.82, "Y", "N")
    days = np.minimum(np.floor(rng.exponential(620.0, b)).astype(np.int64),
                      int((LAST_DAY - FIRST_DAY).astype(np.int64)))
    dates = np.datetime_as_string(LAST_DAY - days.astype("timedelta64[D]"), unit="D")
    # Headline: a "Five Stars" style one (from the written star) or an opening-like phrase.
    auto = rng.random(b) < _HEADLINE_AUTO
    h_tpl = _OPEN_T.pick(plan["text_star"] - 1, rng.random(b))
    h_items, _ = _OPEN_T.word_counts(h_tpl, rng.random((b, _MAX_SLOTS)))
    dirt_u = rng.random((b, 7))
    tags = rng.integers(0, np.iinfo(np.int64).max, (b, 3)).astype(np.uint64).ravel()
    tag_codes = _base36(tags, 13)              # url / video ids of dirty rows
    bodies = _bodies(plan, rng, n)
    phrases = _OPEN_T.render(h_tpl[:n], h_items[:n])

    ids = review_ids(params.seed, plan["dup_src"][:n])
    stars = [BAD_STARS[k] if bad else str(w) for w, bad, k in
             zip(plan["written"][:n].tolist(), plan["dirt_bad_star"][:n].tolist(),
                 plan["bad_star_kind"][:n].tolist())]
    headlines = [STAR_WORDS[w - 1] if a else ph.rstrip(".!") for w, a, ph in
                 zip(plan["written"][:n].tolist(), auto[:n].tolist(), phrases)]
    dirty = plan["dirt_empty_body"][:n].copy()
    for kind in BODY_DIRT:
        dirty |= plan["dirt_" + kind][:n]
    for r in np.flatnonzero(dirty).tolist():
        bodies[r] = _dirty(bodies[r], r, plan, dirt_u[r], tag_codes[3 * r: 3 * r + 3])
    prod = product[:n].tolist()
    columns = zip(customer[:n].astype(str).tolist(), ids, [cat.asin[p] for p in prod],
                  [cat.parent[p] for p in prod], [cat.title[p] for p in prod], stars,
                  helpful[:n].astype(str).tolist(), total[:n].astype(str).tolist(),
                  vine[:n].tolist(), verified[:n].tolist(), headlines, bodies, dates[:n].tolist())
    return ["\t".join(("US", c, i, a, pa, t, CATEGORY, s, h, tv, v, vp, hl, bd, d))
            for c, i, a, pa, t, s, h, tv, v, vp, hl, bd, d in columns]


# --------------------------------------------------------------------------- routing
def part_of(i: np.ndarray | int, rows: int, part_files: int):
    """Part file of row i: contiguous, as-even-as-possible row ranges."""
    return (np.asarray(i, dtype=np.int64) * part_files) // rows


def part_rows(rows: int, part_files: int) -> list[int]:
    """Rows in each part file (hand-checkable: part p holds i with i*P//N == p)."""
    # First row of part p is ceil(p*N/P).
    firsts = [-(-p * rows // part_files) for p in range(part_files + 1)]
    return [firsts[p + 1] - firsts[p] for p in range(part_files)]


def block_records(params: CorpusParams, block: int, rows: int,
                  part_files: int) -> Iterator[tuple[tuple[int, int], str]]:
    """((part, block), lines joined by newline) for each part file the block's rows fall in."""
    lines = block_lines(params, block, rows)
    if not lines:
        return
    parts = part_of(block * BLOCK_ROWS + np.arange(len(lines)), rows, part_files)
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for lo, hi in zip(chain([0], bounds.tolist()), chain(bounds.tolist(), [len(lines)])):
        yield (int(parts[lo]), block), "\n".join(lines[lo:hi])


def n_blocks(rows: int) -> int:
    return -(-rows // BLOCK_ROWS)


def corpus_text_rdd(sc, params: CorpusParams, rows: int, partitions: int, part_files: int):
    """RDD of text records whose partition p is part file p: the header, then its rows in order.

    Generation runs over blocks in `partitions` tasks; an exact partitioner (identity on the
    part index) then routes each block's chunk to its part file and a sort on (part, block)
    restores row order, so the bytes do not depend on `partitions`. Records are whole chunks of
    up to BLOCK_ROWS lines, so the shuffle moves and sorts a few records per block, not rows.
    (RDDs, not DataFrames: the output is plain text lines with an exact per-file layout.)
    """
    routed = (sc.parallelize(range(n_blocks(rows)), partitions)
              .flatMap(lambda b: block_records(params, b, rows, part_files))
              .repartitionAndSortWithinPartitions(part_files, partitionFunc=lambda key: key[0]))
    return routed.mapPartitions(lambda it: chain([HEADER], (text for _, text in it)),
                                preservesPartitioning=True)


def compute_corpus_stats(sc, params: CorpusParams, rows: int, partitions: int) -> dict:
    """Counts over the whole corpus (a cheap pass: decisions only, no text)."""
    def add(a, b):
        return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}
    total = (sc.parallelize(range(n_blocks(rows)), partitions)
             .map(lambda b: block_stats(params, b, rows))
             .fold({}, add))
    return {
        "rows": total.get("rows", 0),
        "dirt_counts": {k: total.get(f"dirt.{k}", 0) for k in DIRT_KINDS},
        "star_counts": {str(s): total.get(f"star.{s}", 0) for s in range(1, 6)},
        "text_star_counts": {str(s): total.get(f"text_star.{s}", 0) for s in range(1, 6)},
        "label_noise_rows": total.get("label_noise_rows", 0),
        "quote_start_rows": total.get("quote_start_rows", 0),
    }
