"""Text → model inputs: vocabulary, padded token-id sequences, equal train shards, TF-IDF.

Texts arrive cleaned (prepare): a text's tokens are the pieces between single spaces; empty
pieces (from doubled spaces) are skipped everywhere, so the Spark and pandas paths agree. Id 0 is
padding (`<pad>`), id 1 stands for every token outside the vocabulary (`<oov>`).
"""
from __future__ import annotations

from itertools import chain
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.ml import Pipeline
from pyspark.ml.feature import (IDF, CountVectorizer, HashingTF, NGram, Normalizer,
                                RegexTokenizer, SQLTransformer)
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from starscale import partitions
# The one definition of balanced class weights is resample's; the encode stage reads it here.
from starscale.resample import balanced_class_weights  # noqa: F401

PAD, OOV = "<pad>", "<oov>"
PAD_ID, OOV_ID = 0, 1
SIDES = ("pre", "post")
# The regex both tokenizers use: runs of non-space characters = split on spaces, drop empties.
TOKEN_PATTERN = r"[^ ]+"


# --------------------------------------------------------------------------- vocabulary
def compute_vocab(train_texts: DataFrame, vocab_size: int, min_count: int,
                  text_col: str = "text") -> list[str]:
    """[PAD, OOV] + the vocab_size − 2 most frequent tokens of text_col with count ≥ min_count.

    Ties are broken by token string (ascending), so the list is deterministic. Runs one Spark
    job (explode → groupBy → count → top-K); only the K winners reach the driver. Tokens that
    would break vocab.txt (line breaks) or collide with the reserved names are left out: they
    encode as OOV.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size {vocab_size}: must be >= 3 (PAD, OOV and one token)")
    if min_count < 1:
        raise ValueError(f"min_count {min_count}: must be >= 1")
    tokens = (
        train_texts
        .select(F.explode(F.split(F.col(text_col), " ")).alias("token"))
        .where((F.col("token") != "") & ~F.col("token").isin(PAD, OOV)
               & ~F.col("token").rlike("[\\r\\n]"))
    )
    counts = (
        tokens
        .groupBy("token").agg(F.count(F.lit(1)).alias("n"))
        .where(F.col("n") >= min_count)
    )
    # orderBy + limit plans as a top-K (TakeOrderedAndProject): no full sort of the counts
    top = counts.orderBy(F.col("n").desc(), F.col("token").asc()).limit(vocab_size - 2).collect()
    return [PAD, OOV] + [row["token"] for row in top]


def vocab_text(vocab: Sequence[str]) -> str:
    """vocab.txt contents: one token per line, line i is id i."""
    return "\n".join(vocab) + "\n"


def load_vocab(text: str, source: str = "vocab.txt") -> list[str]:
    """Parse vocab.txt contents back into the id → token list; ValueError naming the bad line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) < 2 or lines[0] != PAD or lines[1] != OOV:
        raise ValueError(f"{source}: line 1 must be {PAD!r} and line 2 {OOV!r}, "
                         f"got {lines[:2]!r}")
    seen: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token == "" or " " in token:
            raise ValueError(f"{source}:{i + 1}: empty token or token with a space: {token!r}")
        if token in seen:
            raise ValueError(f"{source}:{i + 1}: token {token!r} repeats line {seen[token] + 1}")
        seen[token] = i
    return lines


def vocab_index(vocab: Sequence[str]) -> dict[str, int]:
    """token → id."""
    return {token: i for i, token in enumerate(vocab)}


# --------------------------------------------------------------------------- sequences
def _check_sides(max_len: int, padding: str, truncating: str) -> None:
    if max_len < 1:
        raise ValueError(f"max_len {max_len}: must be >= 1")
    if padding not in SIDES:
        raise ValueError(f"padding {padding!r}: must be one of {SIDES}")
    if truncating not in SIDES:
        raise ValueError(f"truncating {truncating!r}: must be one of {SIDES}")


def _place(out: np.ndarray, row: int, ids: list[int], max_len: int, padding: str,
           truncating: str) -> None:
    # Keras pad_sequences: 'pre' truncation keeps the last max_len ids, 'post' the first.
    if not ids:
        return
    kept = ids[-max_len:] if truncating == "pre" else ids[:max_len]
    if padding == "post":
        out[row, :len(kept)] = kept
    else:
        out[row, max_len - len(kept):] = kept


def pad_sequences(sequences: Iterable[Sequence[int]], max_len: int, padding: str = "pre",
                  truncating: str = "pre") -> np.ndarray:
    """int32 matrix (n, max_len) of id lists padded with 0 / truncated like Keras pad_sequences."""
    _check_sides(max_len, padding, truncating)
    seqs = [list(s) for s in sequences]
    out = np.zeros((len(seqs), max_len), dtype=np.int32)
    for row, ids in enumerate(seqs):
        _place(out, row, ids, max_len, padding, truncating)
    return out


def encode_texts(texts: Iterable[str | None], vocab: Sequence[str] | Mapping[str, int],
                 max_len: int, padding: str = "pre", truncating: str = "pre") -> np.ndarray:
    """int32 matrix (n, max_len): each cleaned text's token ids, padded/truncated.

    vocab is the id → token list (load_vocab) or a token → id dict. Unknown tokens get OOV_ID;
    a missing text (None/NaN) is all padding. This is the code the Spark path runs, and the
    one batch scoring uses, so both encode a text identically.
    """
    _check_sides(max_len, padding, truncating)
    index = vocab if isinstance(vocab, Mapping) else vocab_index(vocab)
    if PAD in index:   # a literal '<pad>' in a text is an unknown word, not padding
        index = {token: i for token, i in index.items() if token != PAD}
    texts = list(texts)
    out = np.zeros((len(texts), max_len), dtype=np.int32)
    get = index.get
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        ids = [get(token, OOV_ID) for token in text.split(" ") if token]
        _place(out, row, ids, max_len, padding, truncating)
    return out


def with_token_ids(df: DataFrame, vocab: Sequence[str], max_len: int, padding: str,
                   truncating: str, text_col: str = "text", ids_col: str = "ids") -> DataFrame:
    """df plus ids_col array<int> (exactly max_len) encoded from text_col by encode_texts.

    The token → id dict travels once per executor as a broadcast; a pandas UDF maps each
    Arrow batch (no built-in looks a token up in a 20k-entry dictionary without a shuffle).
    """
    _check_sides(max_len, padding, truncating)
    index = df.sparkSession.sparkContext.broadcast(
        {token: i for token, i in vocab_index(vocab).items() if token != PAD})

    @F.pandas_udf(T.ArrayType(T.IntegerType()))
    def token_ids(texts: pd.Series) -> pd.Series:
        matrix = encode_texts(texts, index.value, max_len, padding, truncating)
        return pd.Series(list(matrix))

    return df.withColumn(ids_col, token_ids(F.col(text_col)))


# --------------------------------------------------------------------------- shards
class TrainShards(NamedTuple):
    rows: DataFrame       # the kept rows with an int `shard` column
    total: int            # rows in
    dropped: int          # remainder left out so every shard has total // shards rows
    cached: DataFrame     # persisted ordering: unpersist() after the rows are written


def _order_key(seed: int, *cols: str) -> Column:
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in cols])


def compute_train_shards(train: DataFrame, seed: int, shards: int,
                         id_cols: tuple[str, ...] = ("review_id", "copy"),
                         ranges: int | None = None) -> TrainShards:
    """Assign train rows to `shards` shards of exactly equal size.

    Rows are ordered by xxhash64(seed, *id_cols) (ties by the id columns: a total order, so the
    result does not depend on how the input is partitioned); a row's position in that order is
    its partition's offset (from per-partition counts, one small collect) plus its index inside
    the partition; shard = position mod shards. The last total mod shards positions are
    dropped, so every Horovod rank runs the same number of steps. Runs a Spark job and
    persists the ordered rows, which both that job and the later write read.

    ranges: the sort's partitions (default partitions.sized_like(train)). Set explicitly, not
    left to spark.sql.shuffle.partitions: the persisted sort output keeps its partitions (AQE
    does not merge them), and 200 of them made the count and the write 200 tasks of
    milliseconds each. The shards do not depend on it.
    """
    if shards < 1:
        raise ValueError(f"shards {shards}: must be >= 1")
    part = F.spark_partition_id().cast("long")
    order = [F.col("_order"), *[F.col(c) for c in id_cols]]
    ordered = (
        train
        .withColumn("_order", _order_key(seed, *id_cols))
        # range partitions in key order, each sorted: orderBy with a chosen partition count
        .repartitionByRange(ranges or partitions.sized_like(train), *order)
        .sortWithinPartitions(*order)
        # monotonically_increasing_id = partition index << 33 | index inside the partition
        .withColumn("_part", part)
        .withColumn("_in_part", F.monotonically_increasing_id() - F.shiftleft(part, 33))
        .persist(StorageLevel.DISK_ONLY)   # wide (text): never in the heap
    )
    counts = dict(ordered.groupBy("_part").count().collect())
    offsets, total = {}, 0
    for p in sorted(counts):
        offsets[p] = total
        total += counts[p]
    dropped = total % shards
    keep = total - dropped
    offset_map = F.create_map(*chain.from_iterable(
        (F.lit(p), F.lit(o)) for p, o in (offsets or {0: 0}).items()))
    position = offset_map[F.col("_part")] + F.col("_in_part")
    rows = (
        ordered
        .withColumn("_pos", position)
        .where(F.col("_pos") < keep)
        .withColumn("shard", (F.col("_pos") % shards).cast("int"))
        .drop("_order", "_part", "_in_part", "_pos")
    )
    return TrainShards(rows, total, dropped, ordered)


def hash_shards(df: DataFrame, seed: int, shards: int, id_col: str = "review_id") -> DataFrame:
    """df plus an int `shard` = xxhash64(seed, id) mod shards (even only as hashing makes it)."""
    if shards < 1:
        raise ValueError(f"shards {shards}: must be >= 1")
    return df.withColumn("shard", F.pmod(_order_key(seed, id_col), F.lit(shards)).cast("int"))


# --------------------------------------------------------------------------- TF-IDF
def tfidf_pipeline(ngram_max: int, num_features: int, hashed: bool, text_col: str = "text",
                   features_col: str = "features") -> Pipeline:
    """Unfitted Spark ML pipeline: tokens → 1..ngram_max-grams → counts → IDF → L2 norm.

    Counts are CountVectorizer(vocabSize=num_features), the num_features most frequent terms
    of the fitting rows, or HashingTF(numFeatures=num_features) when hashed (no vocabulary;
    scales to 2**20 and beyond). The model adds helper columns `_gram1.._gramN`, `_terms`,
    `_tf`, `_tfidf` besides features_col; select what you need after transform.

    Spark's IDF is ln((n + 1) / (df + 1)); scikit-learn's smooth idf adds 1 to that, so the
    features resemble, but do not equal, TfidfVectorizer(norm='l2') (see sklearn_tfidf_kwargs).
    """
    if not 1 <= ngram_max <= 3:
        raise ValueError(f"ngram_max {ngram_max}: must be 1, 2 or 3")
    if num_features < 1:
        raise ValueError(f"num_features {num_features}: must be >= 1")
    stages = [RegexTokenizer(inputCol=text_col, outputCol="_gram1", pattern=" ", gaps=True,
                             toLowercase=False, minTokenLength=1)]
    stages += [NGram(n=n, inputCol="_gram1", outputCol=f"_gram{n}")
               for n in range(2, ngram_max + 1)]
    grams = ", ".join(f"`_gram{n}`" for n in range(1, ngram_max + 1))
    stages.append(SQLTransformer(statement=f"SELECT *, concat({grams}) AS `_terms` FROM __THIS__"))
    if hashed:
        stages.append(HashingTF(inputCol="_terms", outputCol="_tf", numFeatures=num_features))
    else:
        stages.append(CountVectorizer(inputCol="_terms", outputCol="_tf", vocabSize=num_features,
                                      minDF=1.0))
    stages.append(IDF(inputCol="_tf", outputCol="_tfidf"))
    stages.append(Normalizer(inputCol="_tfidf", outputCol=features_col, p=2.0))
    return Pipeline(stages=stages)


# The fitted IDF's weights are saved beside the pipeline, not by Spark's IDFModel writer: that
# writer makes a one-row DataFrame from a local Seq (idf + docFreq: 16 bytes per feature), so
# the row travels inside the task that writes it: a 16,730 KiB task at 2**20 hashed features
# (issue 16; TaskSetManager's "task of very large size"), growing with num_features towards
# spark.rpc.message.maxSize. Written with pyarrow from the driver instead, no task carries it.
TFIDF_PIPELINE = "pipeline"        # the fitted stages without the IDF (small: no weights)
TFIDF_IDF = "idf.npy"              # the IDF weights, float64, one per feature
TFIDF_IDF_META = "idf.json"        # uid, columns, numDocs, minDocFreq, position in the pipeline


def save_tfidf_model(model, path: str) -> None:
    """Save a fitted tfidf_pipeline model under path: pipeline/ (Spark's writer, IDF left out),
    idf.npy and idf.json (through storage, from the driver). load_tfidf_model reads it back."""
    import io
    import json

    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import IDFModel

    from starscale import storage
    stages = list(model.stages)
    (at,) = [i for i, stage in enumerate(stages) if isinstance(stage, IDFModel)]
    idf = stages[at]
    PipelineModel(stages[:at] + stages[at + 1:]).write().save(f"{path}/{TFIDF_PIPELINE}")
    weights = io.BytesIO()
    np.save(weights, idf.idf.toArray().astype(np.float64))
    storage.write_bytes(f"{path}/{TFIDF_IDF}", weights.getvalue())
    meta = {"uid": idf.uid, "position": at, "numDocs": int(idf.numDocs),
            "inputCol": idf.getInputCol(), "outputCol": idf.getOutputCol(),
            "minDocFreq": int(idf.getMinDocFreq())}
    storage.write_bytes(f"{path}/{TFIDF_IDF_META}", json.dumps(meta).encode())


def load_tfidf_model(path: str):
    """The PipelineModel save_tfidf_model wrote (or, for an older encode output, the one
    Spark's own writer wrote at path). The IDF weights reach the JVM pickled (SerDe), as
    pyspark.mllib passes vectors; its docFreq (only a record of the fit) is left empty."""
    import io
    import json

    from pyspark import SparkContext
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import IDFModel
    from pyspark.mllib.common import _py2java
    from pyspark.mllib.linalg import DenseVector

    from starscale import storage
    meta_bytes = storage.read_bytes(f"{path}/{TFIDF_IDF_META}")
    if meta_bytes is None:
        return PipelineModel.load(path)
    meta = json.loads(meta_bytes)
    weights = np.load(io.BytesIO(storage.read_bytes(f"{path}/{TFIDF_IDF}")))
    sc = SparkContext._active_spark_context
    jvm = sc._jvm
    old = jvm.org.apache.spark.mllib.feature.IDFModel(
        _py2java(sc, DenseVector(weights)), sc._gateway.new_array(jvm.long, 0), meta["numDocs"])
    java_idf = jvm.org.apache.spark.ml.feature.IDFModel(meta["uid"], old)
    java_idf.setInputCol(meta["inputCol"]).setOutputCol(meta["outputCol"])
    java_idf.set(java_idf.minDocFreq(), meta["minDocFreq"])
    stages = list(PipelineModel.load(f"{path}/{TFIDF_PIPELINE}").stages)
    stages.insert(meta["position"], IDFModel._from_java(java_idf))
    return PipelineModel(stages)


def sklearn_tfidf_kwargs(ngram_max: int, max_features: int) -> dict:
    """Keyword arguments of sklearn.feature_extraction.text.TfidfVectorizer matching
    tfidf_pipeline(ngram_max, max_features, hashed=False), for parity runs.

    Same tokens (split on spaces, no lowercasing), same n-grams (joined by one space, as Spark's
    NGram does), same vocabulary rule (max_features most frequent terms over the corpus; ties
    may fall differently), raw counts, smooth idf and L2 norm. Known differences: sklearn's idf
    is Spark's + 1, and sklearn orders columns alphabetically where Spark orders them by
    frequency, so compare through the vocabularies. The hashed mode has no sklearn twin
    (HashingVectorizer uses another hash function).
    """
    if not 1 <= ngram_max <= 3:
        raise ValueError(f"ngram_max {ngram_max}: must be 1, 2 or 3")
    return {"lowercase": False, "token_pattern": TOKEN_PATTERN, "ngram_range": (1, ngram_max),
            "max_features": max_features, "min_df": 1, "max_df": 1.0, "use_idf": True,
            "smooth_idf": True, "sublinear_tf": False, "norm": "l2", "dtype": np.float64}
