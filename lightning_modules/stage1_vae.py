"""Stage 1: train SODEC's VAE compression module (HiFiC; any codec of the interface) with d(x, x̂_f) + λ·R."""

from __future__ import annotations

from torch import Tensor

from lightning_modules.base import CompressionLightningModule, StageImages
from lightning_modules.losses import DistortionLoss
from osdic.codec.interface import ImageCodec
from osdic.registry import MODEL, register


@register(MODEL)
class Stage1VAEModule(CompressionLightningModule):
    def __init__(self, codec: ImageCodec, distortion: DistortionLoss, **kwargs):
        super().__init__(codec=codec, **kwargs)
        self.distortion = distortion

    def trainable_parameters(self):
        return self.codec.main_parameters()

    def compute_losses(self, x: Tensor) -> tuple[dict[str, Tensor], StageImages]:
        out = self.codec(x)
        terms = self.distortion(out["x_hat"], x)
        rate, rate_loss = self.objective.rate(out, x.shape[-2] * x.shape[-1], self.training)
        terms.update(rate, loss=terms["distortion"] + rate_loss)
        return terms, {"x_hat": out["x_hat"]}
