"""Log how many input files were skipped (unreadable) or converted (mode, bit depth, alpha):
``data/skipped_images`` and ``data/converted_images``, summed over ranks."""

from __future__ import annotations

import pytorch_lightning as pl


class InputReport(pl.Callback):
    """At each validation's end, and at a training epoch's end once ``log_every_n_steps`` batches have
    passed since it last logged there: with a few photos an epoch is a batch or two, and the report
    logged (an all-reduce under DDP) at every one of them cost the learning bench's small HiFiC ~2 %
    of its batches (BENCHMARKS.md, learning speed). The gate reads ``global_step``, the same on every
    rank, so all ranks log together."""

    def __init__(self) -> None:
        self._train_logged_at: int | None = None

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        report = getattr(trainer.datamodule, "input_report", None)
        if report is None:
            return
        counts = report()
        pl_module.log_dict(
            {"data/skipped_images": float(counts["skipped"]), "data/converted_images": float(counts["converted"])},
            reduce_fx="sum",
            sync_dist=True,
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._train_logged_at is not None and trainer.global_step - self._train_logged_at < trainer.log_every_n_steps:
            return
        self._train_logged_at = trainer.global_step
        self._log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module)
