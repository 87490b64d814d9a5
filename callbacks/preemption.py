"""Preemption: SIGTERM (what SLURM and cloud schedulers send before killing a job) saves the
training state at the end of the current batch, and the process then exits non-zero.

Lightning's signal handler only records the SIGTERM; its loops then raise ``SIGTERMException``
at the next batch boundary (or inside validation). This callback saves the complete state there
— weights, every optimizer and scheduler, λ's state, the counters and the position in the
epoch, as in ``last.ckpt`` — and ``ckpt_path: auto`` resumes from it when it is the newest
(:func:`osdic.utils.run.resume_checkpoint`). ``train.py`` turns the exception into exit status 143
(128 + SIGTERM), so a scheduler does not take the job for finished.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: the file a SIGTERM writes in the checkpoint directory
PREEMPTED_CHECKPOINT = "preempted.ckpt"


class PreemptionCheckpoint(pl.Callback):
    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / PREEMPTED_CHECKPOINT

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Another exception may have left a step half-done: resuming from that state would be wrong.
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)  # every rank takes part; rank 0 writes
            if trainer.is_global_zero:
                log.warning("SIGTERM: saved %s at step %d; ckpt_path=auto resumes from it",
                            self.path, trainer.global_step)
