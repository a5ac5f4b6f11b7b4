"""The Keras callbacks of a rank: heartbeats, dropout reseeding, learning-rate warmup, the NaN guard,
early stopping with best weights, checkpoints, and the epoch-sleep test hook.

Importing this module imports TensorFlow (the classes subclass keras.callbacks.Callback).
"""
from __future__ import annotations

import math
import time

import numpy as np

from starscale.training import checkpoints
from starscale.training.watchdog import TrainingFailed, Watchdog


def _keras_callback():
    from tensorflow import keras
    return keras.callbacks.Callback


def tf_batch_logs(callback):
    """Mark a callback whose batch hooks ignore their logs (Horovod's broadcast callback) as
    taking TF logs: Keras converts batch logs to numpy, a host sync per batch,
    as soon as one callback with batch hooks lacks the mark."""
    callback._supports_tf_logs = True
    return callback


class Progress(_keras_callback()):
    """Heartbeats for the watchdog; remembers the current epoch and batch."""

    def __init__(self, watchdog: Watchdog):
        super().__init__()
        self._supports_tf_logs = True    # reads no logs: no per-batch conversion to numpy
        self.watchdog = watchdog
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.watchdog.beat(f"epoch {epoch + 1} start")

    def on_train_batch_end(self, batch, logs=None):
        self.watchdog.beat(f"epoch {self.epoch + 1} batch {batch + 1}")

    def on_test_batch_end(self, batch, logs=None):
        self.watchdog.beat(f"epoch {self.epoch + 1} validation batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self.watchdog.beat(f"epoch {epoch + 1} end")


class Sleep(_keras_callback()):
    """Test hook: pause after each epoch's checkpoint (a window to kill the process in)."""

    def __init__(self, seconds: float, watchdog: Watchdog):
        super().__init__()
        self.seconds, self.watchdog = seconds, watchdog

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)
        self.watchdog.beat(f"epoch {epoch + 1} end")


class ReseedDropout(_keras_callback()):
    """Dropout masks from (seed, rank, epoch): the same whether the run resumed or not, and
    different on each rank."""

    def __init__(self, seed: int, rank: int):
        super().__init__()
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, epoch, logs=None):
        from starscale import lstm
        lstm.reseed_dropout(self.model, self.seed, self.rank, epoch)


class WarmupLR(_keras_callback()):
    """Large-batch warmup: before each batch of the first warmup_epochs the learning rate is set
    on a straight line from `start` to `target` (reached at the last batch of the warmup; the
    per-batch timing of Horovod's LearningRateWarmupCallback), then it stays at target, set
    again at each later epoch's start (a run resumed after the warmup uses the same rate).
    The rate lives in Python and is only assigned, never read back: Horovod's callback reads the
    variable before every batch, a device-to-host sync per step on a GPU. Epoch logs get "lr"."""

    def __init__(self, start: float, target: float, warmup_epochs: int, steps_per_epoch: int):
        super().__init__()
        self._supports_tf_logs = True    # reads no batch logs
        self.start, self.target = float(start), float(target)
        self.warmup_epochs, self.steps = int(warmup_epochs), int(steps_per_epoch)
        self.epoch = 0
        self.current: float | None = None

    def rate(self, epoch: int, batch: int) -> float:
        progress = min(1.0, (epoch + (batch + 1) / self.steps) / self.warmup_epochs)
        return self.start + (self.target - self.start) * progress

    def _set(self, value: float) -> None:
        if value != self.current:
            self.model.optimizer.learning_rate.assign(value)
            self.current = value

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch >= self.warmup_epochs:
            self.current = None          # set once per epoch: a restored optimizer may differ
            self._set(self.target)

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch < self.warmup_epochs:
            self._set(self.rate(self.epoch, batch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.current is not None:
            logs["lr"] = self.current


class NanGuard(_keras_callback()):
    """Stop at the first non-finite loss (or output-layer weights) with the epoch and batch in the
    message, without a host sync per batch: each batch only records, on the device, the first
    batch whose running loss or output bias is non-finite (a few asynchronous TF ops on
    a tf.Variable); the flag is read (one sync) every check_every batches and at epoch end.
    Training therefore stops at most check_every batches after the NaN, which stays in the
    message exactly. Every rank checks at the same batches and, after a NaN step, every rank's
    bias is NaN (the allreduced gradient is NaN everywhere), so all ranks stop together."""

    def __init__(self, rank: int, ckpt_dir: str, epoch_of, check_every: int = 100,
                 attempt: str = ""):
        super().__init__()
        self._supports_tf_logs = True    # batch logs stay tensors: Keras does not sync for us
        self.rank, self.ckpt_dir, self.epoch_of = rank, ckpt_dir, epoch_of
        self.attempt = attempt
        self.check_every = max(1, int(check_every))
        self._first_bad = None

    def _flag(self):
        if self._first_bad is None:
            import tensorflow as tf
            self._first_bad = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                          name="nan_guard_first_bad_batch")
        return self._first_bad

    def on_epoch_begin(self, epoch, logs=None):
        self._flag().assign(-1)

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf
        flag = self._flag()
        finite = tf.reduce_all(tf.math.is_finite(self.model.layers[-1].bias))
        loss = (logs or {}).get("loss")
        if loss is not None:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(
                tf.cast(loss, tf.float32))))
        flag.assign(tf.where(tf.logical_and(flag < 0, tf.logical_not(finite)),
                             tf.constant(batch, tf.int64), flag))
        if (batch + 1) % self.check_every == 0:
            self._raise_if_bad()

    def on_epoch_end(self, epoch, logs=None):
        self._raise_if_bad()

    def _raise_if_bad(self) -> None:
        bad = int(self._flag().numpy())
        if bad < 0:
            return
        state = checkpoints.read_state(self.ckpt_dir)
        last = (f"last good checkpoint: {self.ckpt_dir}/{state['model_file']} (epoch "
                f"{state['completed_epochs']})" if state else "no checkpoint written yet")
        msg = (f"NaN loss at epoch {self.epoch_of() + 1} batch {bad + 1} on rank {self.rank}: "
               f"training stopped; {last}")
        checkpoints.write_failure(self.ckpt_dir, msg, self.rank, self.attempt)
        raise TrainingFailed(msg)


class ValidationScore(_keras_callback()):
    """At each epoch's end, the study's score, accuracy, macro F1 and the (unweighted)
    cross-entropy of the model on the validation data, over all ranks → logs val_score,
    val_accuracy, val_macro_f1, val_loss (one pass over the validation rows; fit gets no
    validation_data, so there is no second one).

    Each rank predicts its own validation shards; the ranks' confusion matrices and loss sums
    are averaged by one allreduce. Every metric is a ratio of counts, so the average gives the
    same numbers as the sum, whether the shards were split among the ranks or every rank read
    all of them (training.data.validation_shards)."""

    def __init__(self, val_ds, watchdog: Watchdog, epoch_of):
        super().__init__()
        self.val_ds, self.watchdog, self.epoch_of = val_ds, watchdog, epoch_of

    def on_epoch_end(self, epoch, logs=None):
        from starscale import metrics
        k = metrics.N_CLASSES
        totals = np.zeros(k * k + 2)           # confusion cells, loss sum, rows
        if self.val_ds is not None:
            for batch, (x, y) in enumerate(self.val_ds):
                proba = np.asarray(self.model.predict_on_batch(x), dtype=np.float64)
                true = np.asarray(y).argmax(axis=1)
                totals[:k * k] += np.bincount(true * k + proba.argmax(axis=1), minlength=k * k)
                totals[k * k] -= np.log(np.clip(proba[np.arange(len(true)), true], 1e-12,
                                                None)).sum()
                totals[k * k + 1] += len(true)
                self.watchdog.beat(f"epoch {epoch + 1} validation batch {batch + 1}")
        totals = _average_over_ranks(totals, f"val_totals_{epoch}")
        if totals[k * k + 1] <= 0:
            return
        found = metrics.summary_of_confusion(totals[:k * k].reshape(k, k))
        if logs is not None:
            logs.update(val_loss=float(totals[k * k] / totals[k * k + 1]),
                        val_score=found["score"], val_accuracy=found["accuracy"],
                        val_macro_f1=found["macro_f1"])


def _average_over_ranks(values: np.ndarray, name: str) -> np.ndarray:
    """Horovod: the element-wise average of a vector over every rank (itself with one rank)."""
    import horovod.tensorflow as hvd_tf
    if not hvd_tf.is_initialized() or hvd_tf.size() == 1:
        return values
    import tensorflow as tf
    averaged = hvd_tf.allreduce(tf.constant(values, dtype=tf.float64), op=hvd_tf.Average,
                                name=name)
    return np.asarray(averaged.numpy(), dtype=np.float64)


class BestWeights(_keras_callback()):
    """Early stopping on a validation metric (lstm.monitor: the study's score by default, or
    the loss), keeping the best weights in memory and restoring them at the end of training,
    whether or not it stopped early. Without validation data it watches the training loss."""

    def __init__(self, patience: int, state: dict | None, best_weights,
                 monitor: str = "val_score"):
        super().__init__()
        self.patience = patience
        self.monitor = monitor
        self.watched = monitor
        self.best = state.get("best") if state else None
        self.wait = int(state.get("wait", 0)) if state else 0
        self.best_epoch = state.get("best_epoch") if state else None
        self.best_weights = best_weights
        self.changed = False
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.watched = self.monitor if self.monitor in logs else "loss"
        value = float(logs[self.watched]) if logs.get(self.watched) is not None else math.inf
        if self.watched not in ("loss", "val_loss"):
            value = -value                 # larger is better for a score: keep its negative
        self.changed = False
        if self.best is None or value < self.best:
            self.best, self.wait, self.best_epoch = value, 0, epoch + 1
            self.best_weights = self.model.get_weights()
            self.changed = True
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped = True

    def best_value(self) -> float | None:
        """The best monitored value as logged (the score itself, not its negative)."""
        if self.best is None:
            return None
        negated = self.watched not in ("loss", "val_loss") and math.isfinite(self.best)
        return -self.best if negated else self.best

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class Checkpointer(_keras_callback()):
    """Rank 0: the epoch's checkpoint (training.checkpoints.save_epoch) after every epoch; every
    rank keeps the history. Never writes non-finite weights."""

    def __init__(self, rank: int, ckpt_dir: str, fingerprint: str, lcfg,
                 best: BestWeights, history: dict | None):
        super().__init__()
        self.rank, self.ckpt_dir, self.fingerprint, self.lcfg = rank, ckpt_dir, fingerprint, lcfg
        self.best = best
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, val in (logs or {}).items():
            self.history.setdefault(key, []).append(float(val))
        if self.rank != 0:
            return
        weights = self.model.get_weights()
        if not all(np.isfinite(w).all() for w in weights):
            raise TrainingFailed(f"non-finite weights at the end of epoch {epoch + 1}: "
                                 f"checkpoint not written")
        state = {"best": self.best.best, "wait": self.best.wait, "best_epoch": self.best.best_epoch,
                 "stopped": bool(self.model.stop_training), "history": self.history,
                 "fingerprint": self.fingerprint}
        checkpoints.save_epoch(self.ckpt_dir, epoch + 1, self.model, self.lcfg,
                               self.best.best_weights or weights, self.best.changed, state)
