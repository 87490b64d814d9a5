"""Training's progress bar: one bar for the whole run, toward ``trainer.max_steps`` (training
batches, as λ, checkpoints and validation count them), with its ETA and the current λ, rate and
loss — not Lightning's per-epoch bar ("Epoch 29/-2", 2 of 2 batches) on a step-bounded run."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

#: what the bar shows, from the metrics logged on each training step
SHOWN = {"train/lambda": "λ", "train/bpp": "bpp", "train/loss": "loss"}


class StepProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        self.train_progress_bar.initial = trainer.global_step  # a resumed run: the ETA counts what is left
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("step")

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        """One bar across epochs: nothing to reset."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.train_progress_bar is not None and self._should_update(step, self.train_progress_bar.total):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, str]:
        metrics = trainer.callback_metrics
        return {name: f"{float(metrics[key]):.4g}" for key, name in SHOWN.items() if key in metrics}
