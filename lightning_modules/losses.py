"""Loss terms shared by the stages. Images arrive in [0, 1]; each loss states the range it
measures in (``image_range``), because the papers' weights were tuned for a given range."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from osdic.metrics.perceptual import LPIPS
from osdic.checks import ConfigError, require_non_negative
from osdic.registry import MODEL, register


@register(MODEL)
class DistortionLoss(nn.Module):
    """d(x, x̂) = k_M·MSE + k_P·LPIPS (SODEC: k_M = 1, k_P = 2).

    SODEC takes k_M, k_P from OSEDiff, whose ``lambda_l2``/``lambda_lpips`` apply to images in
    [−1, 1] with LPIPS-VGG: ``image_range`` is the range MSE is measured in (MSE on [−1, 1] is 4×
    MSE on [0, 1]) and ``lpips_net`` the LPIPS backbone. The LPIPS network is built only when
    k_P > 0, so a run with k_P = 0 needs no pretrained weights."""

    def __init__(
        self,
        mse_weight: float = 1.0,
        lpips_weight: float = 2.0,
        lpips_net: str = "vgg",
        image_range: Sequence[float] = (-1.0, 1.0),
        allow_random_weights: bool = False,
    ):
        super().__init__()
        self.mse_weight = require_non_negative("mse_weight", mse_weight)
        self.lpips_weight = require_non_negative("lpips_weight", lpips_weight)
        low, high = (float(v) for v in image_range)
        if not high > low:
            raise ConfigError("image_range", f"must be [low, high] with high > low, got {list(image_range)}")
        self.image_range = (low, high)
        self.mse_scale = (high - low) ** 2
        self.lpips = LPIPS(lpips_net, allow_random_weights) if lpips_weight > 0 else None

    def mse(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """MSE in ``image_range`` of images given in [0, 1]."""
        return self.mse_scale * torch.mean((x_hat.float() - x.float()) ** 2)

    def forward(self, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
        mse = self.mse(x_hat, x)
        terms = {"mse": mse, "distortion": self.mse_weight * mse}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(x_hat, x).mean()
            terms["distortion"] = terms["distortion"] + self.lpips_weight * terms["lpips"]
        return terms


class Alignment:
    """SODEC's alignment loss on the fidelity image x̂_f (the alignment ablation): terms to log
    and the loss to add; ``None`` as the loss means no term."""

    #: whether the term needs the distortion's LPIPS network
    needs_lpips = False

    def __call__(self, x_hat_f: Tensor, x: Tensor, distortion: DistortionLoss) -> tuple[dict[str, Tensor], Tensor | None]:
        raise NotImplementedError


@register(MODEL)
class NoAlignment(Alignment):
    """(i) No alignment term: nothing constrains x̂_f."""

    def __call__(self, x_hat_f, x, distortion):
        return {}, None


@register(MODEL)
class MSEAlignment(Alignment):
    """(iv) α·MSE(x, x̂_f) in the distortion's image range (SODEC's choice, α = 30)."""

    def __init__(self, weight: float = 30.0):
        self.weight = require_non_negative("weight", weight)

    def __call__(self, x_hat_f, x, distortion):
        mse = distortion.mse(x_hat_f, x)
        return {"align_mse": mse}, self.weight * mse


@register(MODEL)
class MSELPIPSAlignment(Alignment):
    """(ii) α·(MSE + LPIPS)(x, x̂_f); needs the distortion's LPIPS (k_P > 0)."""

    needs_lpips = True

    def __init__(self, weight: float = 30.0):
        self.weight = require_non_negative("weight", weight)

    def __call__(self, x_hat_f, x, distortion):
        terms = {"align_mse": distortion.mse(x_hat_f, x), "align_lpips": distortion.lpips(x_hat_f, x).mean()}
        return terms, self.weight * (terms["align_mse"] + terms["align_lpips"])


@register(MODEL)
class MergedAlignment(Alignment):
    """(iii) d(x, x̂_f) with the main loss's k_M, k_P, no separate α."""

    def __call__(self, x_hat_f, x, distortion):
        terms = distortion(x_hat_f, x)
        logged = {"align_mse": terms["mse"], **({"align_lpips": terms["lpips"]} if "lpips" in terms else {})}
        return logged, terms["distortion"]


class AdversarialLoss:
    """A GAN's pair of losses on the discriminator's logits (the ``model/adversary/loss``
    choice, as NeuralCompression's ILLM keeps them): the generator's on D(fake), and the
    discriminator's on D(real) and D(sg(fake)). Computed in float32 under any autocast."""

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError


@register(MODEL)
class NonSaturatingLoss(AdversarialLoss):
    """L_g = −E[log D(fake)], L_D = −E[log D(real)] − E[log(1 − D(fake))], D = sigmoid(logit)
    (SODEC's and OSDiff's)."""

    def generator_loss(self, fake_logits):
        return F.softplus(-fake_logits.float()).mean()

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


@register(MODEL)
class HingeLoss(AdversarialLoss):
    """L_g = −E[D(fake)], L_D = E[max(0, 1 − D(real))] + E[max(0, 1 + D(fake))] (SAGAN, BigGAN)."""

    def generator_loss(self, fake_logits):
        return -fake_logits.float().mean()

    def discriminator_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()
