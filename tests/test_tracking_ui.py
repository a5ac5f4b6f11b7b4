"""Issue 16 point 5 without a browser: per-epoch LSTM metrics become MLflow steps, and rank 0
(only) writes TensorBoard epoch scalars under the cell's checkpoints folder."""
from __future__ import annotations

import math

import numpy as np

from starscale.pipeline.tracking import epoch_metrics
from starscale.training import tensorboard


def test_epoch_metrics_are_steps_named_apart_from_test_metrics():
    manifest = {"history": {"loss": [1.5, 1.2], "val_loss": [1.6, math.nan]}, "test": {}}
    assert epoch_metrics(manifest) == [("epoch.loss", 0, 1.5), ("epoch.loss", 1, 1.2),
                                       ("epoch.val_loss", 0, 1.6)]
    assert epoch_metrics({"stage": "train-lr"}) == [] and epoch_metrics(None) == []


def test_rank0_writes_tensorboard_events(tmp_path):
    ckpt = tmp_path / "checkpoints" / "lstm" / "600_none"
    assert tensorboard.callback(str(ckpt), rank=1) is None
    assert tensorboard.callback("hdfs://nn/out/checkpoints", rank=0) is None
    board = tensorboard.callback(str(ckpt), rank=0)
    import tensorflow as tf
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 3), "float32")
    model.fit(x, np.zeros((8, 2), "float32"), epochs=2, verbose=0, callbacks=[board])
    events = list((ckpt / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, list((ckpt / "tensorboard").rglob("*"))
