"""OSDiff as its own experiment (Eq. 9–14): the generator loss
λ1·‖y_0 − y_r‖² + λ2·R + λ3·‖y_0 − y_c‖² + λ4·L_G, with L_G and the discriminator loss on the
UNet-feature discriminator over noised latents (or the pixel/latent ablations). λ2 is the rate
weight, owned by the rate-annealing callback (paper: constant 1 or 2).

Logged per term, raw and weighted: ``diffusion``/``diffusion_weighted`` (λ1·L_diff), ``bpp``/
``bpp_weighted`` (λ2·R), ``feature``/``feature_weighted`` (λ3·L_feature), ``g_adv``/
``g_adv_weighted`` (λ4·L_G), with the discriminator's ``d_loss``, ``d_acc_real`` and ``d_acc_fake``."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.adversarial import Adversary
from lightning_modules.base import CompressionLightningModule, StageImages
from osdic.models.osdiff import OSDiff
from osdic.checks import require_non_negative
from osdic.registry import MODEL, register


@register(MODEL)
class OSDiffModule(CompressionLightningModule):
    """``adversary``: λ4·L_G's discriminator (its ``weight`` is λ4), on the UNet's features by default."""

    def __init__(self, codec: OSDiff, adversary: Adversary, diffusion_weight: float = 1.0, feature_weight: float = 2.0,
                 **kwargs):
        super().__init__(codec=codec, adversary=adversary, **kwargs)
        self.diffusion_weight = require_non_negative("diffusion_weight", diffusion_weight)
        self.feature_weight = require_non_negative("feature_weight", feature_weight)

    def trainable_parameters(self):
        return self.codec.main_parameters()

    def compute_losses(self, x: Tensor) -> tuple[dict[str, Tensor], StageImages]:
        out = self.codec(x)
        y_0 = out["y_0"].float()
        rate, rate_loss = self.objective.rate(out, x.shape[-2] * x.shape[-1], self.training)  # λ2·R
        terms = {
            "diffusion": torch.mean((out["y_r"].float() - y_0) ** 2),
            "feature": torch.mean((out["y_c"].float() - y_0) ** 2),
            **rate,
            "mse": torch.mean((out["x_hat"].float() - x.float()) ** 2),
        }
        weighted = {"diffusion_weighted": self.diffusion_weight * terms["diffusion"],  # λ1·L_diff
                    "feature_weighted": self.feature_weight * terms["feature"]}  # λ3·L_feature
        terms.update(weighted, loss=sum(weighted.values()) + rate_loss)
        return terms, {"x_hat": out["x_hat"], "fake_latent": out["y_r"], "real_latent": out["y_0"]}
