"""Export the trained codec as a package (safetensors + codec.json) when fitting ends."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from osdic.codec.package import export_package
from training.config import STARTED_FROM_RANDOM


class CodecExport(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        warnings = [f"{STARTED_FROM_RANDOM}: this model, or a stage it was trained from, started from random "
                    f"weights (model.init_from=random), not from its predecessor"] if pl_module.started_from_random else []
        export_package(pl_module.codec, self.dirpath, pl_module.stage, warnings)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the package beside the run that trained it
                import wandb

                artifact = wandb.Artifact(f"codec-{logger.experiment.id}", type="codec",
                                          metadata={"step": trainer.global_step, "stage": pl_module.stage})
                artifact.add_dir(str(self.dirpath))
                logger.experiment.log_artifact(artifact)
