"""Distributed LSTM training on CPU with Gloo: Spark local[2], horovodrun, kill/resume, NaN, stall.

Inputs are tiny synthetic encode outputs written here (vocab 40, max_len 10) where the label is
learnable from the tokens: each star has its own 6 signal tokens.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from starscale import model_store
from tests.helpers import REPO, make_config, synthetic_rows

VOCAB = ["<pad>", "<oov>"] + [f"w{i}" for i in range(38)]      # ids 0..39

TINY = ["lstm.embedding_dim=16", "lstm.units=8", "lstm.batch_size=32", "lstm.shuffle_buffer=256",
        "lstm.learning_rate=0.01", "encode.max_len=10", "sample.size=full",
        "sample.method=random_under", "evaluate.bootstrap=20", "train.start_timeout_s=120",
        "train.stall_timeout_s=120", "lstm.early_stopping_patience=0", "lstm.min_steps=0"]


def write_encode(spark, cfg, train_shard_rows: list[int], val_rows: int = 128,
                 test_rows: int = 200) -> str:
    """Publish encode/<tag> with vocab.txt and sequences/split=*/shard=*/part-0.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.utils.class_weight import compute_class_weight
    from starscale import storage

    out = cfg.encode_dir()

    def table(rows: dict) -> pa.Table:
        return pa.table({"review_id": pa.array(rows["review_id"], pa.string()),
                         "label": pa.array(rows["label"], pa.int32()),
                         "weight": pa.array(rows["weight"], pa.float64()),
                         "ids": pa.array(list(rows["ids"]), pa.list_(pa.int32()))})

    def write(staging: str) -> dict:
        root = storage.local_path(staging)
        os.makedirs(root, exist_ok=True)
        Path(root, "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        parts = [("train", k, n) for k, n in enumerate(train_shard_rows)]
        n_val = len(train_shard_rows)
        parts += [("validation", k, val_rows // n_val) for k in range(n_val)]
        parts += [("test", 0, test_rows)]
        train_labels = []
        for i, (split, shard, n) in enumerate(parts):
            d = Path(root, "sequences", f"split={split}", f"shard={shard}")
            d.mkdir(parents=True, exist_ok=True)
            rows = synthetic_rows(n, 100 + i, f"{split}{shard}-")
            if split == "train":
                train_labels.append(rows["label"])
            pq.write_table(table(rows), d / "part-00000.parquet", row_group_size=100)
        labels = np.concatenate(train_labels)
        weights = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
        # the encode manifest's shape (docs/tables.md): rows per split and shard, label weights
        return {"rows": {split: {str(k): n for s, k, n in parts if s == split}
                         for split in ("train", "validation", "test")},
                "class_weights_balanced": {str(c): float(w)
                                           for c, w in zip(np.unique(labels), weights)}}

    storage.publish(spark, out, write, {"stage": "encode"})
    return out


def tiny_cfg(config_factory, *extra):
    return config_factory(*TINY, *extra)


# --------------------------------------------------------------------------- Spark local[2]
def test_two_ranks_under_spark_train_disjoint_shards_same_weights(spark, config_factory):
    from starscale.stages import train_lstm

    cfg = tiny_cfg(config_factory, "train.launcher=spark", "train.workers=2", "encode.shards=2",
                   "lstm.epochs=2", "train.warmup_epochs=1")
    write_encode(spark, cfg, [320, 320])
    summary = train_lstm.run(spark, cfg, hooks={"return_ids": True})

    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["train_shards"] for r in ranks] == [[0], [1]]
    ids0, ids1 = set(summary["review_ids"][0]), set(summary["review_ids"][1])
    # 320 rows per shard, batch 32: 10 steps → every row of its own shard, none of the other's
    assert len(ids0) == 320 and len(ids1) == 320 and not ids0 & ids1
    assert all(i.startswith("train0-") for i in ids0) and all(i.startswith("train1-") for i in ids1)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    loss = summary["history"]["loss"]
    assert len(loss) == 2 and loss[1] < loss[0]
    assert summary["rows_seen"] == 2 * 2 * 320
    from sklearn.utils.class_weight import compute_class_weight
    labels = np.concatenate([synthetic_rows(320, 100 + k, "")["label"] for k in (0, 1)])
    manifest = json.loads((Path(summary["output"]) / "_MANIFEST.json").read_text())
    np.testing.assert_allclose(manifest["class_weights"],
                               compute_class_weight("balanced", classes=np.arange(5), y=labels))
    assert summary["epochs_completed"] == 2
    from starscale import lstm
    model = model_store.load_lstm_bundle(summary["output"])
    assert model.output_shape == (None, 5)
    assert (Path(summary["output"]) / "vocab.txt").read_text().split("\n")[:2] == ["<pad>", "<oov>"]
    assert json.loads((Path(summary["output"]) / "config.json").read_text())["lstm"]["units"] == 8
    from starscale import results
    table = results.read_results(cfg.stage_dir("results"))
    assert list(table["run_id"]) == [summary["run_id"]]
    assert table["lstm.units"].iloc[0] == 8 and table["rows_seen"].iloc[0] == 1280
    assert len(results.read_predictions(cfg.stage_dir("results"), summary["run_id"])) == 200


def test_uneven_shards_are_refused_with_the_numbers(spark, config_factory):
    """Shard 1 holds one batch more than shard 0. Each rank could only train the smaller rank's
    steps (the rest silently skipped), so the stage refuses before any rank starts and says
    how many rows each rank has (issue 15)."""
    from starscale.stages import train_lstm

    cfg = tiny_cfg(config_factory, "train.launcher=horovodrun", "train.workers=2",
                   "encode.shards=2", "lstm.epochs=1", "train.stall_timeout_s=90")
    write_encode(spark, cfg, [320, 352])
    with pytest.raises(ValueError, match=r"rows per rank \[320, 352\]"):
        train_lstm.run(spark, cfg)


# --------------------------------------------------------------------------- kill and resume
def _cli(cfg_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "starscale", "train-lstm", "--conf",
            str(REPO / "conf" / "local.yaml"), *[a for s in cfg_args for a in ("--set", s)]]


def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(spark, tmp_path):
    from starscale import lstm

    common = [*TINY, "train.launcher=local", "train.workers=1", "encode.shards=1", "lstm.epochs=3",
              "lstm.deterministic=true", "evaluate.bootstrap=0"]
    runs = {}
    for name in ("whole", "killed"):
        out = tmp_path / name
        cfg = make_config(out, *common)
        write_encode(spark, cfg, [256])
        runs[name] = [f"run.output_dir={out / 'out'}", *common]
    env = {**os.environ, "STARSCALE_TRAIN_HOOKS": json.dumps({"epoch_sleep_s": 4})}
    plain_env = {k: v for k, v in os.environ.items() if k != "STARSCALE_TRAIN_HOOKS"}

    subprocess.run(_cli(runs["whole"]), check=True, env=plain_env, capture_output=True, timeout=600)

    state = tmp_path / "killed" / "out" / "checkpoints" / "lstm" / "full_random_under" / "state.json"
    proc = subprocess.Popen(_cli(runs["killed"]), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)       # the training process and its Spark JVM
    proc.wait()
    done_at_kill = json.loads(state.read_text())["completed_epochs"]
    assert 1 <= done_at_kill < 3
    assert not (tmp_path / "killed" / "out" / "models" / "lstm" / "full_random_under").exists()

    resumed = subprocess.run(_cli(runs["killed"]), env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert summary["initial_epoch"] == done_at_kill
    assert summary["epochs_completed"] == 3
    whole = model_store.load_lstm_bundle(str(tmp_path / "whole" / "out" / "models" / "lstm" /
                                                 "full_random_under"))
    again = model_store.load_lstm_bundle(str(tmp_path / "killed" / "out" / "models" / "lstm" /
                                                 "full_random_under"))
    for a, b in zip(whole.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- NaN and stall
def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(spark, config_factory):
    from starscale import layout, lstm
    from starscale.training.watchdog import TrainingFailed
    from starscale.stages import train_lstm

    cfg = tiny_cfg(config_factory, "train.launcher=local", "train.workers=1", "encode.shards=1",
                   "lstm.epochs=3")
    write_encode(spark, cfg, [256])                      # 8 steps per epoch
    with pytest.raises(TrainingFailed, match=r"NaN loss at epoch 2 batch 3 on rank 0"):
        train_lstm.run(spark, cfg, hooks={"nan_at_step": 8 + 3})
    ckpt = Path(layout.checkpoints_dir(cfg)).resolve()
    state = json.loads((ckpt / "state.json").read_text())
    assert state["completed_epochs"] == 1 and state["model_file"] == "epoch-0001.keras"
    model = model_store.load_lstm_bundle(str(ckpt / "epoch-0001.keras"))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    (marker,) = ckpt.glob("_FAILURE-*.json")           # this launch's marker
    assert "NaN loss at epoch 2 batch 3" in json.loads(marker.read_text())["message"]
    assert not Path(layout.model_dir(cfg, "lstm")).exists()


def test_watchdog_turns_a_stall_into_a_failure():
    from starscale.training.watchdog import Stalled, Watchdog

    dog = Watchdog(1.0, hard_exit=False, where="rank 0/1").start()
    try:
        dog.beat("epoch 1 batch 3")
        with pytest.raises(Stalled):
            for _ in range(1200):            # a loop that stops making progress (≤ 60 s)
                time.sleep(0.05)
    finally:
        dog.stop()
    assert dog.fired is not None and "epoch 1 batch 3" in dog.fired
    assert "train.stall_timeout_s=1" in dog.fired


def test_failure_watch_aborts_only_after_a_recorded_failure_and_the_grace(tmp_path):
    from starscale.training.checkpoints import write_failure
    from starscale.training.launch import FailureWatch

    aborted = []
    with FailureWatch(str(tmp_path), 0.5, lambda: aborted.append(1), "job cancelled",
                      poll_s=0.05) as watch:
        time.sleep(0.8)                      # no failure recorded: nothing happens
        assert not aborted and watch.fired is None
        write_failure(str(tmp_path), "rank 1: boom", 1)
        for _ in range(200):
            if aborted:
                break
            time.sleep(0.05)
    assert aborted == [1]
    assert "train.failure_grace_s" in watch.fired and "job cancelled" in watch.fired

    aborted.clear()                          # the launcher returns within the grace: no abort
    with FailureWatch(str(tmp_path), 30, lambda: aborted.append(1), "x", poll_s=0.05):
        time.sleep(0.3)
    assert not aborted


def test_failure_markers_are_per_launch(tmp_path):
    """A marker another launch (an earlier killed run, another run of the tag) left is not this
    launch's failure: the watch ignores it and the error names only this launch's rank; starting
    a launch clears every marker."""
    from starscale.training import checkpoints
    from starscale.training.launch import FailureWatch, failure, new_attempt

    ours, theirs = new_attempt(), new_attempt()
    assert ours != theirs
    checkpoints.write_failure(str(tmp_path), "rank 1: theirs", 1, theirs)
    aborted = []
    with FailureWatch(str(tmp_path), 0.1, lambda: aborted.append(1), "x", poll_s=0.05,
                      attempt=ours):
        time.sleep(0.5)
    assert not aborted
    assert "theirs" not in str(failure(str(tmp_path), RuntimeError("exit 1"), attempt=ours))
    checkpoints.write_failure(str(tmp_path), "rank 0: ours", 0, ours)
    assert "rank 0: ours" in str(failure(str(tmp_path), RuntimeError("exit 1"), attempt=ours))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"_FAILURE-{ours}.json", f"_FAILURE-{theirs}.json"])
    checkpoints.write_failure(str(tmp_path), "old name", 0)
    checkpoints.clear_failure(str(tmp_path))
    assert os.listdir(tmp_path) == []


# Horovod's Spark thread ends with "job cancelled" in the background: expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_failed_rank_that_never_exits_fails_the_stage_under_spark(spark, config_factory):
    """Both ranks hit a NaN at the same step, record it, and then hang instead of exiting (test
    hook standing in for the tf.data teardown deadlock once seen after a worker was killed):
    the driver cancels the Spark job failure_grace_s after the failure and the stage fails with
    the rank's reason instead of waiting forever."""
    from starscale.stages import train_lstm

    cfg = tiny_cfg(config_factory, "train.launcher=spark", "train.workers=2", "encode.shards=2",
                   "lstm.epochs=2", "train.failure_grace_s=3")
    write_encode(spark, cfg, [320, 320])
    with pytest.raises(RuntimeError) as err:
        train_lstm.run(spark, cfg, hooks={"nan_at_step": 4, "hang_on_failure": True})
    message = str(err.value)
    assert "train-lstm: training failed: " in message and "NaN loss" in message, message
    assert "train.failure_grace_s" in message and "Spark job cancelled" in message, message
    # The Spark context is usable afterwards (the cancelled job does not poison the session).
    assert spark.range(10).count() == 10


def test_pretrained_vectors_file_initialises_a_frozen_embedding(spark, config_factory, tmp_path):
    from starscale import lstm
    from starscale.stages import train_lstm

    vectors = tmp_path / "vectors.txt"       # GloVe text format, 16 values per token
    vectors.write_text("".join(f"{tok} " + " ".join(["0.25"] * 16) + "\n" for tok in VOCAB[2:10])
                       + "notinvocab " + " ".join(["9"] * 16) + "\n")
    cfg = tiny_cfg(config_factory, "train.launcher=local", "train.workers=1", "encode.shards=1",
                   "lstm.epochs=1", f"lstm.pretrained_vectors={vectors}",
                   "lstm.embedding_trainable=false", "evaluate.bootstrap=0")
    write_encode(spark, cfg, [128])
    summary = train_lstm.run(spark, cfg)
    emb = model_store.load_lstm_bundle(summary["output"]).get_layer("embedding")
    table = emb.get_weights()[0]
    assert not emb.trainable and table.shape == (40, 16)
    np.testing.assert_array_equal(table[2:10], np.full((8, 16), 0.25, np.float32))
    np.testing.assert_array_equal(table[0], np.zeros(16, np.float32))      # <pad>
    assert np.abs(table[10:]).max() < 0.5 and np.abs(table[10:]).max() > 0  # random, not 9


def test_two_ranks_handed_the_same_gpu_fail_naming_them(spark, config_factory):
    """GPU drill (TensorFlow on the CPU) with both ranks of this host handed GPU 0, as executors
    without GPU isolation do: the ranks' allgather finds the shared (host, GPU) pair and the
    stage fails with the error naming both ranks, the host and the GPU."""
    import socket
    from starscale.stages import train_lstm

    cfg = tiny_cfg(config_factory, "train.launcher=spark", "train.workers=2", "encode.shards=2",
                   "lstm.epochs=1", "train.use_gpu=true", "train.gpu_drill=true",
                   "lstm.recurrent_dropout=0.0", "train.failure_grace_s=10")
    write_encode(spark, cfg, [320, 320])
    with pytest.raises(RuntimeError) as err:
        train_lstm.run(spark, cfg, hooks={"gpu_address": "0"})
    message = str(err.value)
    assert "train-lstm: training failed: " in message, message
    assert (f"ranks 0 and 1 both have GPU 0 on host {socket.gethostname()}" in message), message
