"""The results table (one flat row per trained/evaluated model) and saved test predictions.

``<results_dir>`` is ``cfg.stage_dir("results")``. Layout:

- ``results.parquet`` — every row ever appended; the schema is the union of all rows' columns
  (a column a row lacks is null). ``results.csv`` is the same table as CSV, rewritten on every
  append, for people and spreadsheets.
- ``predictions/<run_id>.parquet`` (test) and ``<run_id>.validation.parquet`` —
  ``review_id string, label int (0..4), pred int (0..4), proba array<double> (5, may be null)``
  per row, for paired bootstrap comparisons later: a Parquet folder written by Spark
  (write_prediction_table: the LR) or one file written from the driver (write_predictions:
  the LSTM); read_predictions reads either.

The results table is small (one row per run), so an append rewrites it whole: read, concat,
write a temp file, rename over the old one. A lock file serialises appenders on a local disk so
two runs finishing together both land. Paths may be local or any URI pyarrow.fs understands
(hdfs://, s3://); there the rename is atomic but the lock is not held (run appends one at a time).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from starscale import layout, storage

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
PREDICTIONS_DIR = "predictions"
LOCK = ".results.lock"

# Columns that come first in the table, in this order; the rest follow alphabetically.
LEADING = ("run_id", "created_utc", "model", "engine", "tag", "sample_size", "sample_method",
           "stage", "score", "score_lo", "score_hi", "accuracy", "accuracy_lo", "accuracy_hi",
           "macro_f1", "macro_f1_lo", "macro_f1_hi")


@contextlib.contextmanager
def _locked(fs: pafs.FileSystem, root: str) -> Iterator[None]:
    """An exclusive lock on <root>/.results.lock for local disks; a no-op elsewhere."""
    if not storage.is_local_fs(fs):
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


def new_run_id(model: str, tag: str = "") -> str:
    """'<model>_<tag>_<UTC stamp>_<6 hex>': unique, sortable by time within a model and tag."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return "_".join(str(p) for p in (model, tag, stamp, uuid.uuid4().hex[:6]) if p != "")


def append_result(results_dir: str, row: dict[str, Any]) -> dict[str, Any]:
    """Append one row (nested dicts are flattened to dotted names) to results.parquet/.csv.

    Adds run_id (when missing) and created_utc. Returns the row as written. The trainers and
    evaluate write through write_row (the ResultRow contract); this is the table's writer.
    """
    if not isinstance(row, dict) or not row:
        raise ValueError(f"append_result({results_dir}): row must be a non-empty dict")
    flat = flatten(row)
    flat.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if not flat.get("run_id"):
        flat["run_id"] = new_run_id(str(flat.get("model", "run")), str(flat.get("tag", "")))
    fs, root = storage.filesystem(results_dir)
    fs.create_dir(root, recursive=True)
    with _locked(fs, root):
        existing = _read(fs, root)
        table = _table((existing.to_pylist() if existing is not None else []) + [flat])
        storage.write_bytes(layout.join(results_dir, RESULTS_PARQUET),
                            write=lambda wfs, p: pq.write_table(table, p, filesystem=wfs))

        def write_csv(wfs, path: str) -> None:
            with wfs.open_output_stream(path) as out:
                pacsv.write_csv(table, out)
        storage.write_bytes(layout.join(results_dir, RESULTS_CSV), write=write_csv)
    return flat


def read_results(results_dir: str) -> pd.DataFrame:
    """The whole results table (empty DataFrame when nothing was appended yet)."""
    fs, root = storage.filesystem(results_dir)
    table = _read(fs, root)
    return pd.DataFrame() if table is None else table.to_pandas()

# --------------------------------------------------------------------------- the row contract
@dataclass(frozen=True)
class ResultRow:
    """One results row: what train-lr, train-lstm and evaluate each write, column for column.

    Identity and effort are fixed fields (None where a model has no such number: an LR has no
    epochs, an LSTM no iterations); ``metrics`` holds metrics.metric_columns (score, its
    interval, accuracy, macro F1, per-class numbers, confusion); ``params`` the config sections
    the model was trained with (PARAM_SECTIONS), written as dotted 'section.key' columns.
    Readers (experiment, report, verdict) use these names and nothing else.
    """
    run_id: str
    model: str                          # 'lr' | 'lstm'
    engine: str | None                  # mllib | sklearn | horovod-<launcher>; None: evaluate of an LSTM
    tag: str                            # layout.model_tag: encode tag (LR), sample tag (LSTM)
    sample_size: str                    # text: ladder sizes are ints or 'full'
    sample_method: str
    stage: str                          # train-lr | train-lstm | evaluate
    model_dir: str                      # qualified; the manifest there names this run_id
    run_name: str
    metrics: dict[str, Any]
    bootstrap: int
    bootstrap_seed: int
    trained_run_id: str | None = None   # evaluate: the run that trained the model
    train_rows: int | None = None
    test_rows: int | None = None
    rows_seen: int | None = None
    iterations: int | None = None
    epochs_run: int | None = None
    epochs_completed: int | None = None
    best_epoch: int | None = None
    stopped_early: bool | None = None
    workers: int | None = None
    steps_per_epoch: int | None = None
    samples_per_s: float | None = None
    fit_seconds: float | None = None
    predict_seconds: float | None = None
    eval_seconds: float | None = None
    train_wall_seconds: float | None = None
    stage_seconds: float | None = None
    adasyn_rows_added: int | None = None
    sample_tag: str | None = None       # the sample cell (LR rows' tag is the encode tag)
    replicate: int | None = None        # seed replicate (sample.replicate): 0 = the grid itself
    val_score: float | None = None      # the study's score on the validation split (selection)
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    converged: bool | None = None       # LR: stopped before lr.max_iter; LSTM: None
    lr_grid: list | None = None         # LR: every lr.reg_grid point (reg_param, iterations, ...)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The flat dict append_result writes: fields, then metrics, then params."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("metrics", "params")}
        out.update(self.metrics)
        out.update(flatten(self.params))
        return out


# Config sections a trained model's row carries as 'section.key' columns.
PARAM_SECTIONS = {"lr": ("lr", "sample", "encode"), "lstm": ("lstm", "train", "sample", "encode")}


def model_params(cfg, model: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """{section: {key: value}} of cfg for PARAM_SECTIONS[model], plus extra dotted columns."""
    params: dict[str, Any] = {name: dataclasses.asdict(getattr(cfg, name))
                              for name in PARAM_SECTIONS[model]}
    if model == "lstm":
        params["run"] = {"seed": cfg.run.seed}
    params.update(extra or {})
    return params


def write_row(results_dir: str, row: ResultRow) -> dict[str, Any]:
    """Append a contract row to the results table; returns it as written."""
    return append_result(results_dir, row.record())


def find_row(results_dir: str, run_id: str | None) -> dict[str, Any] | None:
    """The results row of run_id (plain Python values, NaN as None), or None."""
    if not run_id:
        return None
    table = read_results(results_dir)
    if table.empty:
        return None
    hits = table[table["run_id"].astype("string") == str(run_id)]
    if hits.empty:
        return None
    return {k: _plain(v) for k, v in hits.iloc[-1].to_dict().items()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value



def _check_run_id(run_id: str) -> None:
    if not run_id or "/" in run_id or run_id.startswith((".", "_")):
        raise ValueError(f"run_id {run_id!r}: need a non-empty name without '/' or a leading '.'/'_'")


SPLITS = ("test", "validation")


def predictions_path(results_dir: str, run_id: str, split: str = "test") -> str:
    """predictions/<run_id>.parquet (test) or predictions/<run_id>.validation.parquet."""
    _check_run_id(run_id)
    if split not in SPLITS:
        raise ValueError(f"predictions of {run_id}: split must be one of {SPLITS}, got {split!r}")
    suffix = "" if split == "test" else f".{split}"
    return layout.join(results_dir, PREDICTIONS_DIR, f"{run_id}{suffix}.parquet")


def save_predictions(results_dir: str, run_id: str, review_ids, y_true, y_pred, proba=None,
                     split: str = "test") -> str:
    """Write one run's predictions of a split (labels 0..4) as Parquet; returns the path."""
    return write_predictions(predictions_path(results_dir, run_id, split), review_ids, y_true,
                             y_pred, proba)


def write_predictions(path: str, review_ids, y_true, y_pred, proba=None) -> str:
    """Predictions held on the driver (labels 0..4) → one Parquet file at path (a
    predictions_path); returns the path."""
    review_ids = np.asarray(review_ids, dtype=object)
    y_true = np.asarray(y_true, dtype=np.int32)
    y_pred = np.asarray(y_pred, dtype=np.int32)
    n = review_ids.shape[0]
    if y_true.shape != (n,) or y_pred.shape != (n,):
        raise ValueError(f"{path}: review_ids has {n} rows, y_true {y_true.shape}, "
                         f"y_pred {y_pred.shape}")
    if proba is None:
        proba_col = pa.nulls(n, type=pa.list_(pa.float64()))
    else:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[0] != n:
            raise ValueError(f"{path}: proba must be (n, 5), got {proba.shape}")
        proba_col = pa.FixedSizeListArray.from_arrays(pa.array(proba.reshape(-1)), proba.shape[1]) \
            .cast(pa.list_(pa.float64()))
    table = pa.table({"review_id": pa.array(review_ids, type=pa.string()),
                      "label": pa.array(y_true), "pred": pa.array(y_pred), "proba": proba_col})
    return storage.write_bytes(path, write=lambda fs, p: pq.write_table(table, p, filesystem=fs))


def write_prediction_table(predictions, path: str) -> str:
    """Predictions scored by Spark (a DataFrame: review_id, label, pred, proba) → a Parquet
    folder at path (a predictions_path), written by Spark's tasks: none of its rows pass
    through the driver. read_predictions reads a file and a folder alike. Returns the path."""
    from pyspark.sql import functions as F
    (predictions.select(F.col("review_id").cast("string"), F.col("label").cast("int"),
                        F.col("pred").cast("int"), F.col("proba").cast("array<double>"))
     .write.mode("overwrite").parquet(path))
    return path


def read_predictions(results_dir: str, run_id: str, split: str = "test") -> pd.DataFrame:
    """One run's saved predictions of a split: review_id, label, pred, proba."""
    path = predictions_path(results_dir, run_id, split)
    fs, full = storage.filesystem(path)
    if fs.get_file_info(full).type == pafs.FileType.NotFound:
        raise ValueError(f"no saved predictions for run {run_id!r} ({split} split): {path}")
    return pq.read_table(full, filesystem=fs).to_pandas()
