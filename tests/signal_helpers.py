"""A callback the preemption test adds to a ``python train.py`` run through Hydra overrides."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class WaitForSigterm(pl.Callback):
    """At ``hook`` (after training batch ``step``, or as a validation at that step starts), touch
    ``marker`` and wait until the test's SIGTERM has reached Lightning's handler: the signal then
    lands at a known point."""

    def __init__(self, step: int, marker: str, timeout_s: float = 120, hook: str = "on_train_batch_end"):
        self.step, self.marker, self.timeout_s, self.hook = step, Path(marker), timeout_s, hook

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if self.hook == "on_train_batch_end":
            self._wait(trainer)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self.hook == "on_validation_batch_start" and not trainer.sanity_checking:
            self._wait(trainer)

    def _wait(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        self.marker.touch()
        deadline = time.monotonic() + self.timeout_s
        while not trainer.received_sigterm:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SIGTERM within {self.timeout_s} s")
            time.sleep(0.01)
