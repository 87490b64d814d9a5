"""Loss terms shared by the stages. Images are in [0, 1]; MSE is on that range."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metrics.perceptual import LPIPS
from utils.config import require_non_negative


def rate_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel of a batch: −Σ log2 p over all latents / (batch × original pixels)."""
    batch = next(iter(likelihoods.values())).shape[0]
    bits = sum(torch.log(p.float()).sum() for p in likelihoods.values()) / -math.log(2)
    return bits / (batch * num_pixels)


class DistortionLoss(nn.Module):
    """d(x, x̂) = k_M·MSE + k_P·LPIPS (SODEC: k_M = 1, k_P = 2). The LPIPS network is built only
    when k_P > 0, so a run with k_P = 0 needs no pretrained weights."""

    def __init__(
        self,
        mse_weight: float = 1.0,
        lpips_weight: float = 2.0,
        lpips_net: str = "alex",
        allow_random_weights: bool = False,
    ):
        super().__init__()
        self.mse_weight = require_non_negative("mse_weight", mse_weight)
        self.lpips_weight = require_non_negative("lpips_weight", lpips_weight)
        self.lpips = LPIPS(lpips_net, allow_random_weights) if lpips_weight > 0 else None

    def forward(self, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
        mse = torch.mean((x_hat.float() - x.float()) ** 2)
        terms = {"mse": mse, "distortion": self.mse_weight * mse}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(x_hat, x).mean()
            terms["distortion"] = terms["distortion"] + self.lpips_weight * terms["lpips"]
        return terms
