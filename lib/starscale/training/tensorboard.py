"""TensorBoard logs of the LSTM, written by rank 0 only (Horovod: the other ranks' metrics are
the same after MetricAverageCallback, and one writer per run keeps one curve per cell).

Logs go to <checkpoints dir>/tensorboard, i.e. <run.output_dir>/checkpoints/lstm/<sample tag>/
tensorboard: one TensorBoard run per cell, kept across resumes (a resumed fit appends a new
event file from its initial epoch). `make tensorboard` serves them on 127.0.0.1. Nothing is
written when the checkpoints are not on local disk (TensorBoard reads local folders here).
"""
from __future__ import annotations

import os

from starscale import storage

SUBDIR = "tensorboard"


def log_dir(ckpt_dir: str) -> str | None:
    """Where rank 0 writes TensorBoard events; None for a non-local checkpoints dir."""
    local = storage.local_path(ckpt_dir)
    return os.path.join(local, SUBDIR) if local else None


def callback(ckpt_dir: str, rank: int):
    """A Keras TensorBoard callback for rank 0 (epoch scalars only: no graph, no profiler,
    no histograms), else None."""
    folder = log_dir(ckpt_dir)
    if rank != 0 or folder is None:
        return None
    import tensorflow as tf
    return tf.keras.callbacks.TensorBoard(log_dir=folder, histogram_freq=0, write_graph=False,
                                          write_images=False, update_freq="epoch",
                                          profile_batch=0)
