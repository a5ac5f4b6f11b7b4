"""Test hooks of the trainer, in one place: what they are, where they come from, where they act.

Production runs have none. Tests pass them to ``train_lstm.run(..., hooks={...})`` or, for a
CLI run in a subprocess, as JSON in $STARSCALE_TRAIN_HOOKS. Each acts at exactly one place:

- nan_at_step (int): global step k's sample weights become NaN → a NaN loss (training.data).
- return_ids (bool): each rank returns the review_ids it read (training.rank).
- epoch_sleep_s (float): pause after each epoch's checkpoint, a window to kill in
  (training.callbacks.Sleep).
- hang_on_failure (bool): a failed rank never exits, standing in for a deadlocked one
  (training.rank.exit_now), so the driver's failure watch can be tested.
- gpu_address (str): every rank is handed this GPU address instead of its Spark task's, as
  executors without GPU isolation hand the same GPU to two ranks of one host
  (training.rank.setup_devices), so the (host, GPU) uniqueness check can be tested.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

HOOKS_ENV = "STARSCALE_TRAIN_HOOKS"


@dataclass(frozen=True)
class TrainHooks:
    nan_at_step: int | None = None
    return_ids: bool = False
    epoch_sleep_s: float | None = None
    hang_on_failure: bool = False
    gpu_address: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainHooks":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data or {}) - names
        if unknown:
            raise ValueError(f"train hooks: unknown {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(data or {}))

    @classmethod
    def resolve(cls, given: Mapping[str, Any] | None) -> "TrainHooks":
        """$STARSCALE_TRAIN_HOOKS (JSON) overlaid by the hooks a caller passed."""
        return cls.from_dict({**json.loads(os.environ.get(HOOKS_ENV) or "{}"), **(given or {})})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
