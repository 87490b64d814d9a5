"""OSDiff (Jia et al.): a codec on SD latents decoded by one controlled UNet step.

    x → E_SD (frozen) → y_0 (4 × H/8) → G_a → y (M × H/16) → Q → ŷ (+ hyperprior ẑ, bitstreams)
    ŷ → G_s → y_c (4 × H/8);  (y_T, y_c) → UNet ε_θ (frozen) + control module → y_r → D_SD → x̂

The control module is ControlNet-style: a trainable copy of the UNet's encoder and middle block
whose zero-initialised outputs are added to the frozen UNet's skips, conditioned on y_c at the
latent resolution. Entropy model: the mean-scale hyperprior (models/entropy.py); the public
code's ELIC-style channel-slice/checkerboard context model is not reproduced.

The UNet's cross-attention context (``context``) is SD's own empty-prompt text embedding, as in
the public code: the frozen UNet then sees the input it was trained with for unconditional
generation (an all-zero context would feed every cross-attention layer values it never saw).

The starting latent y_T (``start``), identical in training and decoding unless stated:
  noise             pure Gaussian noise
  noised_condition  q(y_T | y_c): y_c through the forward process to t = 999 (default)
  noised_clean      q(y_T | y_0) in training (the public code) — y_0 is unknown to a decoder,
                    which then starts from pure noise: the public code's train/test mismatch,
                    kept only to reproduce it.
Decoding draws its noise from a generator seeded with ``noise_seed``, so a file decodes
identically every time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from compressai.layers import ResidualBlock, ResidualBlockUpsample, ResidualBlockWithStride
from diffusers import ControlNetModel
from torch import Tensor, nn

from osdic.models.backbone import DiffusionBackbone
from osdic.models.entropy import HyperpriorCodec, MeanScaleHyperprior
from osdic.checks import require_choice, require_int

STARTS = ("noise", "noised_condition", "noised_clean")


class OSDiff(HyperpriorCodec):
    def __init__(
        self,
        backbone: DiffusionBackbone,
        context: nn.Module | Callable[..., nn.Module],
        latent_channels: int = 320,
        hyper_channels: int = 192,
        residual_blocks: int = 3,
        control_embedding_channels: int = 32,
        start: str = "noised_condition",
        timestep: int = 999,
        noise_seed: int = 0,
    ):
        super().__init__()
        self.start = require_choice("start", start, STARTS)
        require_int("timestep", timestep, minimum=0, below=backbone.num_train_timesteps)
        self.backbone, self.timestep, self.noise_seed = backbone, timestep, noise_seed
        # a config gives a partial (the width comes from the backbone); a package gives a module
        self.context = context if isinstance(context, nn.Module) else context(context_dim=backbone.cross_attention_dim)
        sd_channels = backbone.unet.config.in_channels
        self.analysis = nn.Sequential(  # G_a: y_0 (H/8) → y (H/16)
            ResidualBlockWithStride(sd_channels, latent_channels, stride=2),
            *[ResidualBlock(latent_channels, latent_channels) for _ in range(residual_blocks)],
        )
        self.entropy_model = MeanScaleHyperprior(latent_channels, hyper_channels)
        self.synthesis = nn.Sequential(  # G_s: ŷ (H/16) → y_c (H/8)
            *[ResidualBlock(latent_channels, latent_channels) for _ in range(residual_blocks)],
            ResidualBlockUpsample(latent_channels, latent_channels, upsample=2),
            nn.Conv2d(latent_channels, sd_channels, 3, padding=1),
        )
        self.control = ControlNetModel.from_unet(
            backbone.unet, conditioning_channels=sd_channels,
            conditioning_embedding_out_channels=(control_embedding_channels,),
        )
        self.control.requires_grad_(True)
        self.hparams = dict(backbone=backbone, context=self.context, latent_channels=latent_channels, hyper_channels=hyper_channels,
                            residual_blocks=residual_blocks, control_embedding_channels=control_embedding_channels,
                            start=start, timestep=timestep, noise_seed=noise_seed)

    # ------------------------------------------------------------------------ generation
    def start_latent(self, y_c: Tensor, y_0: Tensor | None, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(y_c.shape, generator=generator, device=y_c.device, dtype=y_c.dtype)
        t = torch.full((y_c.shape[0],), self.timestep, device=y_c.device, dtype=torch.long)
        if self.start == "noised_condition":
            return self.backbone.add_noise(y_c, noise, t)
        if self.start == "noised_clean" and y_0 is not None:
            return self.backbone.add_noise(y_0, noise, t)
        return noise

    def denoise(self, y_t: Tensor, y_c: Tensor) -> Tensor:
        """One controlled UNet step at t = 999 → y_r (ε- or v-prediction, as the backbone)."""
        t = torch.full((y_t.shape[0],), self.timestep, device=y_t.device, dtype=torch.long)
        context = self.context.tokens(y_t.shape[0])
        down, mid = self.control(y_t, t, encoder_hidden_states=context, controlnet_cond=y_c, return_dict=False)
        return self.backbone.predict_clean_latent(
            y_t, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )

    def forward(self, x: Tensor) -> dict:
        height, width = x.shape[-2:]
        y_0 = self.backbone.encode(self.pad(x))
        out = self.entropy_model(self.analysis(y_0))
        y_c = self.synthesis(out["y_hat"])
        y_r = self.denoise(self.start_latent(y_c, y_0, None), y_c)
        x_hat = self.backbone.decode(y_r)[..., :height, :width]
        return {**out, "x_hat": x_hat, "y_0": y_0, "y_c": y_c, "y_r": y_r}

    # ---------------------------------------------------------------------- real coding
    def compress(self, x: Tensor) -> dict:
        with torch.no_grad():
            coded = self.entropy_model.compress(self.analysis(self.backbone.encode(self.pad(x))))
        return {"strings": coded["strings"], "shape": coded["shape"]}

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None) -> dict:
        y_hat, _ = self.entropy_model.decompress(strings, shape)
        param = next(self.synthesis.parameters())
        y_c = self.synthesis(y_hat.to(device=param.device, dtype=param.dtype))
        generator = torch.Generator(device=y_c.device).manual_seed(self.noise_seed)
        x_hat = self.backbone.decode(self.denoise(self.start_latent(y_c, None, generator), y_c)).float().clamp(0, 1)
        if image_size is not None:
            x_hat = x_hat[..., : image_size[0], : image_size[1]]
        return {"x_hat": x_hat}
