"""A callback the preemption tests add to a ``python train.py`` run through Hydra overrides."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl

from callbacks.preemption import PreemptionCheckpoint


def marker_of_rank(marker: str | Path, rank: int) -> Path:
    return Path(f"{marker}.rank{rank}")


class WaitForSigterm(pl.Callback):
    """Each rank touches its marker (:func:`marker_of_rank`) and waits until the test's SIGTERM has
    reached it, so that the signal lands at a known point: as the training batch that ends at step
    ``step`` starts (``at="training_batch"``), or as the validation at step ``step`` starts
    (``at="validation"``)."""

    def __init__(self, step: int, marker: str, timeout_s: float = 120, at: str = "training_batch"):
        self.step, self.marker, self.timeout_s, self.at = step, marker, timeout_s, at
        self.waited = False

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self.at == "training_batch" and trainer.global_step + 1 == self.step:
            self._wait(trainer)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self.at == "validation" and not trainer.sanity_checking and trainer.global_step == self.step:
            self._wait(trainer)

    def _wait(self, trainer: pl.Trainer) -> None:
        if self.waited:
            return
        self.waited = True
        preemption = next(c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint))
        marker_of_rank(self.marker, trainer.global_rank).touch()
        deadline = time.monotonic() + self.timeout_s
        while not preemption.requested:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SIGTERM within {self.timeout_s} s")
            time.sleep(0.01)
