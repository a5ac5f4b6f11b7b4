"""A rank's input: encode's token-id shards → batches → tf.data, with no Spark.

Layout read (written by the encode stage): ``<encode>/sequences/split=<split>/shard=<k>/*.parquet``
with the columns of tables.SEQUENCES_SCHEMA: ``review_id string, label int (0..4), weight
double, ids array<int> (encode.max_len)``.

- ``list_shards`` / ``count_rows``: which files make up each shard, rows from the footers.
- ``assign_shards`` / ``validation_shards`` / ``steps_per_epoch``: which shards a rank reads and
  how many batches every rank runs per epoch (the same number everywhere).
- ``train_batches``: the endless seeded shuffle of one rank's rows, ``train_dataset`` the same as
  tf.data (bench/input_pipeline.py measures this one); ``eval_batches`` / ``eval_dataset`` the
  finite validation input; ``split_chunks`` a split's rows in file order (test scoring).
- ``label_counts`` / ``class_weight_list``: balanced class weights over the train shards.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from starscale import layout, storage
from starscale.tables import SEQUENCES_SCHEMA

PARTITION_COLUMNS = ("split", "shard")      # folder names, not columns of the files
COLUMNS = [f.name for f in SEQUENCES_SCHEMA.fields if f.name not in PARTITION_COLUMNS]
N_CLASSES = 5


# --------------------------------------------------------------------------- shards
def sequences_dir(encode_dir: str) -> str:
    return layout.join(encode_dir, layout.SEQUENCES)


def list_shards(seq_dir: str, split: str) -> dict[int, list[str]]:
    """{shard: sorted Parquet files} under <seq_dir>/split=<split>/shard=<k>/ (empty if none)."""
    from pyarrow import fs as pafs
    fs, root = storage.filesystem(seq_dir)
    base = f"{root}/split={split}"
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return {}
    shards: dict[int, list[str]] = {}
    for info in fs.get_file_info(pafs.FileSelector(base)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith("shard="):
            continue
        files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
                       if f.type == pafs.FileType.File and not f.base_name.startswith(("_", "."))
                       and not any(p.startswith((".", "_")) for p in f.path[len(info.path):].split("/") if p))
        shards[int(name.split("=", 1)[1])] = files
    return dict(sorted(shards.items()))


def count_rows(files: list[str], seq_dir: str) -> int:
    """Rows in Parquet files, read from their footers only."""
    import pyarrow.parquet as pq
    fs, _ = storage.filesystem(seq_dir)
    return sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)


def first_row_length(files: list[str], seq_dir: str) -> int | None:
    """Length of the first ids array of the first file (encode.max_len as written), or None."""
    import pyarrow.parquet as pq
    if not files:
        return None
    fs, _ = storage.filesystem(seq_dir)
    sample = pq.ParquetFile(files[0], filesystem=fs).read_row_group(0, columns=["ids"])
    return len(sample.column("ids")[0].as_py()) if sample.num_rows else None


def label_counts(files: list[str], seq_dir: str) -> np.ndarray:
    """Rows per label 0..4 over files (label column only)."""
    import pyarrow.parquet as pq
    fs, _ = storage.filesystem(seq_dir)
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    for f in files:
        labels = pq.read_table(f, columns=["label"], filesystem=fs).column("label").to_numpy()
        if labels.size and (labels.min() < 0 or labels.max() > N_CLASSES - 1):
            raise ValueError(f"{f}: label outside 0..4")
        counts += np.bincount(labels.astype(np.int64), minlength=N_CLASSES)[:N_CLASSES]
    return counts


def class_weight_list(counts) -> list[float]:
    """Balanced class weights as the trainer's 5-vector: resample.balanced_class_weights (sklearn's
    'balanced' over the classes present) per label; 1.0 for a label with no rows (never used)."""
    from starscale.resample import balanced_class_weights
    weights = balanced_class_weights({k: int(n) for k, n in enumerate(counts)})
    return [float(weights.get(k, 1.0)) for k in range(len(counts))]


def assign_shards(shards: list[int], rank: int, size: int, split: str = "train") -> list[int]:
    """Shards of one rank: rank, rank+size, … of the sorted shard ids (shards ≥ workers)."""
    if len(shards) < size:
        raise ValueError(f"{split}: {len(shards)} shard(s) for {size} Horovod workers; set "
                         f"encode.shards >= train.workers (re-run encode) or lower train.workers")
    ordered = sorted(shards)
    return [ordered[i] for i in range(rank, len(ordered), size)]


def check_even_shards(train_rows: dict[int, int], size: int) -> None:
    """ValueError with the numbers unless the train shards divide evenly among size workers
    (same shard count per rank, per-rank rows within one row per shard, as encode writes them):
    otherwise every rank trains only as many rows per epoch as the smallest rank has, and the
    rest are silently skipped (3 shards of 1,000 rows on 2 workers: 2,000 rows per epoch)."""
    shards = sorted(train_rows)
    per_rank = [sum(train_rows[s] for s in shards[r::size]) for r in range(size)]
    if len(shards) % size:
        raise ValueError(
            f"train: {len(shards)} shards do not divide evenly among {size} workers (rows per "
            f"rank {per_rank}: each epoch would train {size} x {min(per_rank)} of "
            f"{sum(per_rank)} rows); set encode.shards to a multiple of train.workers "
            f"(re-run encode) or change train.workers")
    if max(per_rank) - min(per_rank) > len(shards) // size:
        raise ValueError(
            f"train: shard rows are uneven among {size} workers (rows per rank {per_rank}: "
            f"each epoch would train {size} x {min(per_rank)} of {sum(per_rank)} rows); "
            f"re-run encode, which writes equal shards")


def steps_per_epoch(train_rows: dict[int, int], size: int, batch_size: int) -> int:
    """Steps every rank runs per epoch: the smallest rank's full batches, so no rank waits on a
    collective that another rank never reaches (a rank's leftover rows are skipped that epoch)."""
    per_rank = [sum(train_rows[s] for s in assign_shards(list(train_rows), r, size))
                for r in range(size)]
    steps = min(per_rank) // batch_size
    if steps < 1:
        raise ValueError(f"train: the smallest rank has {min(per_rank)} rows, fewer than one "
                         f"batch (lstm.batch_size={batch_size})")
    return steps


def validation_shards(val_rows: dict[int, int], rank: int, size: int) -> list[int]:
    """Validation shards of one rank: split like train when every rank then gets rows, else all
    of them on every rank (the same choice on every rank, so the averaged metrics line up)."""
    shards = sorted(s for s, n in val_rows.items() if n > 0)
    if not shards:
        return []
    if len(shards) >= size and all(assign_shards(shards, r, size) for r in range(size)):
        return assign_shards(shards, rank, size, "validation")
    return shards


def files_of(seq_dir: str, split: str, shards: list[int]) -> list[str]:
    """The Parquet files of the given shards of one split, shard by shard."""
    by_shard = list_shards(seq_dir, split)
    return [f for s in shards for f in by_shard.get(s, [])]


# --------------------------------------------------------------------------- reading
def _read_table_batches(files: list[str], fs, chunk_rows: int, order: np.ndarray | None = None,
                        with_ids: bool = True):
    """(review_id, label, weight, ids) numpy chunks, one Parquet record batch at a time.
    with_ids=False: review_id is neither read nor turned into Python strings (None instead):
    training needs no ids, and the strings cost more than the rest of a chunk."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    columns = COLUMNS if with_ids else [c for c in COLUMNS if c != "review_id"]
    for i in (order if order is not None else range(len(files))):
        pf = pq.ParquetFile(files[i], filesystem=fs)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            ids_col = batch.column("ids")
            flat = pc.list_flatten(ids_col).to_numpy(zero_copy_only=False)
            n = batch.num_rows
            if n and flat.size % n:
                raise ValueError(f"{files[i]}: ids arrays have unequal lengths (expected encode.max_len each)")
            yield (np.asarray(batch.column("review_id").to_pylist(), dtype=object)
                   if with_ids else None,
                   batch.column("label").to_numpy(zero_copy_only=False).astype(np.int64),
                   batch.column("weight").to_numpy(zero_copy_only=False).astype(np.float32),
                   flat.astype(np.int32, copy=False).reshape(n, -1) if n
                   else np.zeros((0, 0), np.int32))


def split_chunks(seq_dir: str, split: str, chunk_rows: int) -> Iterator[tuple]:
    """(review_id, label, weight, ids) chunks of every row of one split, shard by shard in file
    order (what a model is scored on)."""
    fs, _ = storage.filesystem(seq_dir)
    files = [f for fs_ in list_shards(seq_dir, split).values() for f in fs_]
    yield from _read_table_batches(files, fs, chunk_rows)


# --------------------------------------------------------------------------- train batches
def _drain(buf: list[tuple], rng, shuffle_buffer: int, batch_size: int, final: bool):
    """Shuffle the buffered rows; hand out whole batches, keeping about half back (so rows mix
    across record batches) unless this is the end of the files. → (rows out, new buffer)."""
    cols = [None if buf[0][k] is None else np.concatenate([b[k] for b in buf]) for k in range(4)]
    n = len(cols[1])
    if shuffle_buffer > 0:
        perm = rng.permutation(n)
        cols = [None if c is None else c[perm] for c in cols]
    full = (n // batch_size) * batch_size
    cut = full if final else max(((n // 2) // batch_size) * batch_size, min(batch_size, full))
    rest = [] if final else [tuple(None if c is None else c[cut:] for c in cols)]
    return tuple(None if c is None else c[:cut] for c in cols), rest


def _shuffled(chunks, rng, shuffle_buffer: int, batch_size: int) -> Iterator[tuple]:
    """Chunks of whole batches from a seeded buffer shuffle; only the buffer is in memory."""
    buf: list[tuple] = []
    buffered = 0
    target = max(shuffle_buffer, batch_size)
    for chunk in chunks:
        if len(chunk[1]) == 0:
            continue
        buf.append(chunk)
        buffered += len(chunk[1])
        if buffered >= target:
            out, buf = _drain(buf, rng, shuffle_buffer, batch_size, final=False)
            buffered = len(buf[0][1])
            yield out
    if buf:
        yield _drain(buf, rng, shuffle_buffer, batch_size, final=True)[0]


def _epoch_batches(chunks, *, steps: int, epoch: int, batch_size: int, max_len: int, cw, eye,
                   seq_dir: str, nan_at_step: int | None, seen_ids: set | None):
    """One epoch's `steps` (ids, one-hot labels, sample weights) batches; returns how many."""
    emitted = 0
    for rid, lab, wt, ids in chunks:
        for start in range(0, len(lab), batch_size):
            if emitted >= steps:
                return emitted
            if ids.shape[1] != max_len:
                raise ValueError(f"{seq_dir}: ids have length {ids.shape[1]}, expected "
                                 f"encode.max_len={max_len}")
            sl = slice(start, start + batch_size)
            weights = cw[lab[sl]] * wt[sl]
            emitted += 1
            if nan_at_step is not None and epoch * steps + emitted == nan_at_step:
                weights = np.full_like(weights, np.nan)   # test hook: a NaN loss at this step
            if seen_ids is not None:
                seen_ids.update(rid[sl].tolist())
            yield ids[sl], eye[lab[sl]], weights
        if emitted >= steps:
            return emitted
    return emitted


def train_batches(files: list[str], seq_dir: str, *, batch_size: int, steps: int, start_epoch: int,
                  seed: int, rank: int, shuffle_buffer: int, class_weights: list[float],
                  max_len: int, nan_at_step: int | None = None,
                  seen_ids: set | None = None) -> Iterator[tuple]:
    """Endless (ids, one-hot labels, sample weights) batches: exactly `steps` per epoch.

    Shuffling is a seeded buffer shuffle keyed on (seed, rank, epoch): epoch k's batches are the
    same whether the run started at epoch 0 or resumed at k. Only the buffer is in memory.
    sample weight = class weight of the label × the table's weight column. seen_ids (the
    return_ids test hook): every batch's review ids are added to it; only then are ids read.
    """
    fs, _ = storage.filesystem(seq_dir)
    cw = np.asarray(class_weights, dtype=np.float32)
    eye = np.eye(len(class_weights), dtype=np.float32)
    epoch = start_epoch
    while True:
        rng = np.random.default_rng([seed, rank, epoch])
        order = rng.permutation(len(files)) if shuffle_buffer > 0 else None
        chunks = _shuffled(_read_table_batches(files, fs, max(batch_size, 1024), order,
                                               with_ids=seen_ids is not None),
                           rng, shuffle_buffer, batch_size)
        emitted = yield from _epoch_batches(
            chunks, steps=steps, epoch=epoch, batch_size=batch_size, max_len=max_len, cw=cw,
            eye=eye, seq_dir=seq_dir, nan_at_step=nan_at_step, seen_ids=seen_ids)
        if emitted < steps:
            raise ValueError(f"{seq_dir}: rank {rank} ran out of rows after {emitted} of {steps} "
                             f"batches (shard row counts changed since the driver counted them?)")
        epoch += 1


def eval_batches(files: list[str], seq_dir: str, batch_size: int, n_classes: int = N_CLASSES):
    """Finite (ids, one-hot labels) batches over files in order (validation: unweighted)."""
    fs, _ = storage.filesystem(seq_dir)
    eye = np.eye(n_classes, dtype=np.float32)
    for _rid, lab, _wt, ids in _read_table_batches(files, fs, max(batch_size, 1024),
                                                   with_ids=False):
        for start in range(0, len(lab), batch_size):
            sl = slice(start, start + batch_size)
            yield ids[sl], eye[lab[sl]]


# --------------------------------------------------------------------------- tf.data
def batch_signature(max_len: int) -> tuple:
    """tf.data signature of train_batches' (ids, one-hot labels, sample weights)."""
    import tensorflow as tf
    return (tf.TensorSpec((None, max_len), tf.int32), tf.TensorSpec((None, N_CLASSES), tf.float32),
            tf.TensorSpec((None,), tf.float32))


def train_dataset(files: list[str], seq_dir: str, *, max_len: int, prefetch: int | None = None,
                  **batches: Any):
    """A rank's training input: train_batches(files, seq_dir, max_len=…, **batches) as a
    tf.data Dataset, `prefetch` batches ahead (None: tf.data.AUTOTUNE, which sizes the buffer
    to keep the consumer fed). bench/input_pipeline.py measures this same one."""
    import tensorflow as tf
    return tf.data.Dataset.from_generator(
        lambda: train_batches(files, seq_dir, max_len=max_len, **batches),
        output_signature=batch_signature(max_len)).prefetch(
            tf.data.AUTOTUNE if prefetch is None else prefetch)


def eval_dataset(files: list[str], seq_dir: str, *, max_len: int, batch_size: int):
    """A rank's validation input (None without files): eval_batches as tf.data."""
    import tensorflow as tf
    if not files:
        return None
    return tf.data.Dataset.from_generator(
        lambda: eval_batches(files, seq_dir, batch_size),
        output_signature=batch_signature(max_len)[:2]).prefetch(tf.data.AUTOTUNE)
