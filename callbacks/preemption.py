"""Preemption: SIGTERM (what SLURM and cloud schedulers send before killing a job) saves the
training state at the end of the current batch, and the process then exits non-zero.

Lightning's loops raise ``SIGTERMException`` at the batch boundary where the ranks agreed to stop
(below). This callback saves the complete state there — weights, every
optimizer and scheduler, λ's state, the counters and the position in the epoch, as in
``last.ckpt`` — and ``ckpt_path: auto`` resumes from it when it is the newest
(:func:`training.run.resume_checkpoint`). ``train.py`` turns the exception into exit status 143
(128 + SIGTERM), so a scheduler does not take the job for finished.

The signal is only noted when it arrives; the run stops where every rank agrees to: at the end of
a training batch, or at the end of a validation. Lightning's own handler broadcasts to the other
ranks from inside the signal handler, and rank 0 re-sends the signal to the ranks it launched: with
the whole process group signalled (scancel, a preemption) each rank meets that broadcast at a
different point of its step, the collectives do not match, and the job hangs or dies without a
checkpoint. Here every rank, at each batch end and validation end, reduces "did any rank receive
SIGTERM" (one scalar, as Lightning already broadcasts one per batch) and they all stop at that same
point, so the checkpoint is taken by all of them together.

A validation is never cut short: Lightning would stop it half-way and a resumed run would never run
it again (its metrics and its step checkpoint lost, and the λ controller, which reads the
validation's real bpp, off its course). Finished, the validation's metrics, λ update and checkpoints
are written, and the run stops at the next batch boundary, from where it resumes exactly.
(DataLoader workers ignore SIGTERM, datamodules.images: a scheduler signals the whole process group.)

Known limit: a SIGTERM noticed at the last batch of an epoch is checkpointed after Lightning has
counted the epoch as finished, and the resumed run's batches from then on are not the ones an
uninterrupted run would draw (Lightning's restart at an epoch's end; mid-epoch, with or without a
validation, resumes exactly: tests/test_preemption.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: the file a SIGTERM writes in the checkpoint directory
PREEMPTED_CHECKPOINT = "preempted.ckpt"


class PreemptionCheckpoint(pl.Callback):
    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / PREEMPTED_CHECKPOINT
        self.requested = False  # this process received SIGTERM (not yet agreed between the ranks)
        self.held = False  # the run stops after the validation now running
        self.validated_at: int | None = None  # the training step of the last validation inside fit

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning installs this method as its SIGTERM handler when the loops start (a private
        # name: the only way to keep its collective out of the signal handler)
        trainer._signal_connector._sigterm_notifier_fn = self._note_sigterm

    def _note_sigterm(self, signum: int, frame: object) -> None:
        self.requested = True

    def _agreed(self, trainer: pl.Trainer) -> bool:
        """Whether any rank received SIGTERM; every rank calls it at the same point (a collective)."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return self.requested
        flag = torch.tensor([int(self.requested)], device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_batch_end(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if self._agreed(trainer):
            trainer._signal_connector.received_sigterm = True  # Lightning stops at this batch's end

    def on_validation_batch_end(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        # a stop agreed at the batch that this validation follows: Lightning checks the flag right
        # after this hook and would end the validation here
        if trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = False
            self.held = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validated_at = trainer.global_step
        agreed = self._agreed(trainer)
        if agreed or self.held:
            self.held = False
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Another exception may have left a step half-done: resuming from that state would be wrong.
        if isinstance(exception, SIGTERMException):
            # Lightning, resuming after a batch that ended with a validation, replays that batch's end
            # and counts it for the loggers once more (its own checkpoints are saved before the count):
            # saved after the count, this one would shift every later logged step by one
            epoch_loop = trainer.fit_loop.epoch_loop
            replayed = self.validated_at == trainer.global_step
            epoch_loop._batches_that_stepped -= replayed
            try:
                trainer.save_checkpoint(self.path)  # every rank takes part; rank 0 writes
            finally:
                epoch_loop._batches_that_stepped += replayed
            if trainer.is_global_zero:
                log.warning("SIGTERM: saved %s at step %d; ckpt_path=auto resumes from it",
                            self.path, trainer.global_step)
