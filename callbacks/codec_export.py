"""Export the trained codec as a package (safetensors + codec.json) when fitting ends."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from osdic.codec.package import export_package


class CodecExport(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            export_package(pl_module.codec, self.dirpath)
