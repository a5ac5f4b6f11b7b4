"""The stall watchdog of a rank and the failures training raises.

A hang (a rank stuck in a collective whose peer died, a stuck read) becomes a failure with a
reason: ``Watchdog`` fires when no batch completes for train.stall_timeout_s. It starts before
Horovod's init, so a hang there, in a broadcast or in the checkpoint load is bounded too (by the
longer of train.start_timeout_s and train.stall_timeout_s until fit begins).
"""
from __future__ import annotations

import os
import sys
import threading
import time

STALL_EXIT_CODE = 75
FAILURE_EXIT_CODE = 1


class TrainingFailed(RuntimeError):
    """A NaN loss or a stall: the message names where it happened."""


class Stalled(TrainingFailed):
    """Raised in the training thread by the watchdog (local mode)."""


class Watchdog:
    """Fails the run when no batch completes for `timeout_s`: a hang becomes a failure.

    hard_exit (worker processes): print the reason and os._exit, which the launcher reports as a
    failed rank. Otherwise (in-process local mode) raise Stalled in the thread that started the
    watchdog (an asynchronous exception: it does not depend on whoever owns the SIGINT handler,
    Spark and Horovod both install one), and exit hard only if that thread is still stuck in
    native code after another timeout.
    """

    def __init__(self, timeout_s: float, hard_exit: bool, where: str, on_stall=None):
        self.timeout_s = float(timeout_s)
        self.hard_exit = hard_exit
        self.where = where
        self.on_stall = on_stall
        self.setting = "train.stall_timeout_s"     # the config key timeout_s comes from
        self.last = time.monotonic()
        self.position = "start"
        self.fired: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="starscale-watchdog", daemon=True)
        self._target = threading.get_ident()

    def start(self) -> "Watchdog":
        self.last = time.monotonic()
        self._target = threading.get_ident()
        self._thread.start()
        return self

    def beat(self, position: str) -> None:
        self.last = time.monotonic()
        self.position = position

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        import ctypes
        tick = min(5.0, max(0.2, self.timeout_s / 10))
        while not self._stop.wait(tick):
            idle = time.monotonic() - self.last
            if idle < self.timeout_s:
                continue
            self.fired = (f"no batch completed for {idle:.0f}s ({self.setting}="
                          f"{self.timeout_s:g}) on {self.where}, last progress: {self.position}")
            print(f"starscale train: STALL: {self.fired}", file=sys.stderr, flush=True)
            if self.on_stall:
                try:
                    self.on_stall(self.fired)
                except Exception:            # noqa: BLE001 — failing is what matters here
                    pass
            if self.hard_exit:
                os._exit(STALL_EXIT_CODE)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                       ctypes.py_object(Stalled))
            if not self._stop.wait(self.timeout_s):
                os._exit(STALL_EXIT_CODE)
            return
