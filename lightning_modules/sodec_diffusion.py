"""What SODEC's stages 2 and 3 share: the full model, d(x, x̂), the rate and alignment terms.

Stages differ only in their defaults: which part trains (stage 2 freezes the VAE compression
module E, H_a, P) and which loss terms are on (stage 3 adds λ·R and α·L_align). The
training-strategy and alignment ablations are these same switches set by config.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from lightning_modules.base import CompressionLightningModule
from lightning_modules.losses import DistortionLoss, rate_bpp
from models.backbone import DiffusionBackbone
from models.hific import HiFiCCompressor
from models.sodec import SODEC
from utils.config import config_section, require_choice, require_non_negative

#: SODEC's alignment-loss ablation: none | mse (ours, α·MSE(x, x̂_f)) | mse_lpips (α·(MSE + LPIPS))
#: | merged (d(x, x̂_f) with the main loss's k_M, k_P, no separate α)
ALIGNMENTS = ("none", "mse", "mse_lpips", "merged")


class SODECDiffusionModule(CompressionLightningModule):
    def __init__(
        self,
        vae_codec: HiFiCCompressor,
        backbone: DiffusionBackbone,
        guidance: Callable[..., nn.Module],
        sodec: dict,
        distortion: DistortionLoss,
        train_vae_module: bool,
        rate_term: bool,
        alignment: str,
        alignment_weight: float = 30.0,
        **kwargs,
    ):
        with config_section("sodec"):
            codec = SODEC(vae_codec, backbone, guidance, **sodec)
        super().__init__(codec=codec, **kwargs)
        self.distortion = distortion
        self.train_vae_module, self.rate_term = train_vae_module, rate_term
        self.rate_in_loss = rate_term
        self.alignment = require_choice("alignment", alignment, ALIGNMENTS)
        self.alignment_weight = require_non_negative("alignment_weight", alignment_weight)
        if alignment == "mse_lpips" and distortion.lpips is None:
            raise ValueError("alignment=mse_lpips needs LPIPS: set distortion.lpips_weight > 0")
        if not train_vae_module:
            vae = self.codec.vae_codec
            for part in (vae.encoder, vae.entropy_model):
                part.requires_grad_(False)

    def trainable_parameters(self):
        vae = self.codec.vae_codec
        vae_params = list(vae.main_parameters()) if self.train_vae_module else list(vae.fidelity_decoder.parameters())
        return vae_params + self.codec.generative_parameters()

    def compute_losses(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        out = self.codec(x)
        terms = self.distortion(out["x_hat"], x)
        terms["bpp"] = rate_bpp(out["likelihoods"], x.shape[-2] * x.shape[-1])
        loss = terms["distortion"]
        if self.rate_term:
            loss = loss + self.current_lambda * terms["bpp"]
        x_hat_f = out["x_hat_f"]
        terms["align_mse"] = torch.mean((x_hat_f.float() - x.float()) ** 2)
        if self.alignment == "mse":
            loss = loss + self.alignment_weight * terms["align_mse"]
        elif self.alignment == "mse_lpips":
            terms["align_lpips"] = self.distortion.lpips(x_hat_f, x).mean()
            loss = loss + self.alignment_weight * (terms["align_mse"] + terms["align_lpips"])
        elif self.alignment == "merged":
            loss = loss + self.distortion(x_hat_f, x)["distortion"]
        terms["loss"] = loss
        return terms, {"x_hat_f": x_hat_f, "x_hat": out["x_hat"], "fake_latent": out["latent_0"]}
