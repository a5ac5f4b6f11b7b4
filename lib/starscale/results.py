"""The results table (one flat row per trained/evaluated model) and saved test predictions.

``<results_dir>`` is ``cfg.stage_dir("results")``. Layout:

- ``results.parquet`` — every row ever appended; the schema is the union of all rows' columns
  (a column a row lacks is null). ``results.csv`` is the same table as CSV, rewritten on every
  append, for people and spreadsheets.
- ``predictions/<run_id>.parquet`` — ``review_id string, label int (0..4), pred int (0..4),
  proba array<double> (5, may be null)`` per test row, for paired bootstrap comparisons later.

The results table is small (one row per run), so an append rewrites it whole: read, concat,
write a temp file, rename over the old one. A lock file serialises appenders on a local disk so
two runs finishing together both land. Paths may be local or any URI pyarrow.fs understands
(hdfs://, s3://); there the rename is atomic but the lock is not held (run appends one at a time).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import uuid
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs as pafs

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
PREDICTIONS_DIR = "predictions"
LOCK = ".results.lock"

# Columns that come first in the table, in this order; the rest follow alphabetically.
LEADING = ("run_id", "created_utc", "model", "engine", "tag", "sample_size", "sample_method",
           "stage", "score", "score_lo", "score_hi", "accuracy", "accuracy_lo", "accuracy_hi",
           "macro_f1", "macro_f1_lo", "macro_f1_hi")


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(path)
    local = path[len("file://"):] if path.startswith("file://") else path
    return pafs.LocalFileSystem(), os.path.abspath(local)


@contextlib.contextmanager
def _locked(fs: pafs.FileSystem, root: str) -> Iterator[None]:
    """An exclusive lock on <root>/.results.lock for local disks; a no-op elsewhere."""
    if not isinstance(fs, pafs.LocalFileSystem):
        yield
        return
    import fcntl
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cell(value: Any) -> Any:
    """A value fit for a flat table: scalars as they are, containers as JSON text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dict, list, tuple, set)):
        return json.dumps(value if not isinstance(value, set) else sorted(value),
                          sort_keys=True, default=str)
    return value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'lr': {'C': 1.0}} → {'lr.C': 1.0}: nested sections as dotted column names."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, name))
        else:
            out[name] = _cell(value)
    return out


def _column(values: list[Any]) -> pa.Array:
    """One column of the table; values of more than one kind (50000 and 'full') become text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → Arrow table over the union of their columns (missing cells null)."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    leading = [c for c in LEADING if c in names]
    ordered = leading + sorted(c for c in names if c not in leading)
    return pa.table({c: _column([row.get(c) for row in rows]) for c in ordered})


def _read(fs: pafs.FileSystem, root: str) -> pa.Table | None:
    path = f"{root}/{RESULTS_PARQUET}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return pq.read_table(path, filesystem=fs)


def _write_atomic(fs: pafs.FileSystem, path: str, write) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        write(tmp)
        fs.move(tmp, path)             # a rename: readers see the old or the new file
    finally:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)


def append_result(results_dir: str, row: dict[str, Any]) -> dict[str, Any]:
    """Append one row (nested dicts are flattened to dotted names) to results.parquet/.csv.

    Adds run_id (when missing) and created_utc. Returns the row as written.
    """
    if not isinstance(row, dict) or not row:
        raise ValueError(f"append_result({results_dir}): row must be a non-empty dict")
    flat = flatten(row)
    flat.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if not flat.get("run_id"):
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        flat["run_id"] = "_".join(str(p) for p in (flat.get("model", "run"), flat.get("tag", ""),
                                                      stamp, uuid.uuid4().hex[:6]) if p != "")
    fs, root = _filesystem(results_dir)
    fs.create_dir(root, recursive=True)
    with _locked(fs, root):
        existing = _read(fs, root)
        table = _table((existing.to_pylist() if existing is not None else []) + [flat])
        _write_atomic(fs, f"{root}/{RESULTS_PARQUET}",
                      lambda p: pq.write_table(table, p, filesystem=fs))

        def write_csv(path: str) -> None:
            with fs.open_output_stream(path) as out:
                pacsv.write_csv(table, out)
        _write_atomic(fs, f"{root}/{RESULTS_CSV}", write_csv)
    return flat


def read_results(results_dir: str) -> pd.DataFrame:
    """The whole results table (empty DataFrame when nothing was appended yet)."""
    fs, root = _filesystem(results_dir)
    table = _read(fs, root)
    return pd.DataFrame() if table is None else table.to_pandas()


def _check_run_id(run_id: str) -> None:
    if not run_id or "/" in run_id or run_id.startswith((".", "_")):
        raise ValueError(f"run_id {run_id!r}: need a non-empty name without '/' or a leading '.'/'_'")


def predictions_path(results_dir: str, run_id: str) -> str:
    _check_run_id(run_id)
    return f"{results_dir.rstrip('/')}/{PREDICTIONS_DIR}/{run_id}.parquet"


def save_predictions(results_dir: str, run_id: str, review_ids, y_true, y_pred, proba=None) -> str:
    """Write one run's test predictions (labels 0..4) as Parquet; returns the path."""
    review_ids = np.asarray(review_ids, dtype=object)
    y_true = np.asarray(y_true, dtype=np.int32)
    y_pred = np.asarray(y_pred, dtype=np.int32)
    n = review_ids.shape[0]
    if y_true.shape != (n,) or y_pred.shape != (n,):
        raise ValueError(f"save_predictions({run_id}): review_ids has {n} rows, y_true "
                         f"{y_true.shape}, y_pred {y_pred.shape}")
    if proba is None:
        proba_col = pa.nulls(n, type=pa.list_(pa.float64()))
    else:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[0] != n:
            raise ValueError(f"save_predictions({run_id}): proba must be (n, 5), got {proba.shape}")
        proba_col = pa.FixedSizeListArray.from_arrays(pa.array(proba.reshape(-1)), proba.shape[1]) \
            .cast(pa.list_(pa.float64()))
    table = pa.table({"review_id": pa.array(review_ids, type=pa.string()),
                      "label": pa.array(y_true), "pred": pa.array(y_pred), "proba": proba_col})
    path = predictions_path(results_dir, run_id)
    fs, full = _filesystem(path)
    fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
    _write_atomic(fs, full, lambda p: pq.write_table(table, p, filesystem=fs))
    return path


def read_predictions(results_dir: str, run_id: str) -> pd.DataFrame:
    """One run's saved predictions: review_id, label, pred, proba."""
    path = predictions_path(results_dir, run_id)
    fs, full = _filesystem(path)
    if fs.get_file_info(full).type == pafs.FileType.NotFound:
        raise ValueError(f"no saved predictions for run {run_id!r}: {path}")
    return pq.read_table(full, filesystem=fs).to_pandas()
