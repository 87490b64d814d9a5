"""A callback the preemption test adds to a ``python train.py`` run through Hydra overrides."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class WaitForSigterm(pl.Callback):
    """After training batch ``step``, touch ``marker`` and wait until the test's SIGTERM has
    reached Lightning's handler: the signal then lands at a known batch."""

    def __init__(self, step: int, marker: str, timeout_s: float = 120):
        self.step, self.marker, self.timeout_s = step, Path(marker), timeout_s

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + self.timeout_s
        while not trainer.received_sigterm:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SIGTERM within {self.timeout_s} s")
            time.sleep(0.01)
