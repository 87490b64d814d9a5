"""Log how many input files were skipped (unreadable) or converted (mode, bit depth, alpha):
``data/skipped_images`` and ``data/converted_images``, summed over ranks."""

from __future__ import annotations

import pytorch_lightning as pl


class InputReport(pl.Callback):
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
        self._log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module)
