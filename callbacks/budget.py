"""Stop training after a budget of this process's CPU time (benchmarks that compare recipes at
equal compute; Lightning's ``max_time`` counts wall time, which other load on the machine skews)."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from osdic.checks import require_positive


class CPUTimeBudget(pl.Callback):
    def __init__(self, seconds: float):
        self.seconds = require_positive("seconds", seconds)
        self.start = time.process_time()

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.process_time() - self.start >= self.seconds:
            trainer.should_stop = True
