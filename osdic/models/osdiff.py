"""OSDiff (Jia et al.): a codec on SD latents decoded by one controlled UNet step.

    x → E_SD (frozen) → y_0 (4 × H/8) → G_a → y (M × H/16) → Q → ŷ (+ hyperprior ẑ, bitstreams)
    ŷ → G_s → y_c (4 × H/8);  (y_T, y_c) → UNet ε_θ (frozen) + control module → y_r → D_SD → x̂

Two parts are config nodes, each with the public code's choice by default:
  entropy_model  ELIC's channel-group + checkerboard context model
                 (``model/codec/entropy_model``: elic), or the mean-scale hyperprior
                 (hyperprior); models/entropy.py
  control        ControlNet-XS-like, width ratio 0.2, reading concat(y_t, y_c), zero-initialised
                 connections into the UNet's encoder, middle block and decoder
                 (``model/codec/control``: controlnet_xs), or diffusers' full ControlNet
                 (controlnet); models/control.py
A config gives each as a partial (the widths come from the codec and the backbone, and a new
control module starts from the UNet's weights); a codec package gives the built module.

The UNet's cross-attention context (``context``) is SD's own empty-prompt text embedding, as in
the public code: the frozen UNet then sees the input it was trained with for unconditional
generation (an all-zero context would feed every cross-attention layer values it never saw).

The starting latent y_T (``start``, a :class:`StartLatent`; ``model/codec/start``), identical in
training and decoding unless stated: :class:`PureNoise`, :class:`NoisedCondition` (the default)
or :class:`NoisedClean`. A new start is a subclass registered as a codec part (``@register(CODEC)``: what a package may
build) and a YAML file there. Decoding draws its noise from a
generator seeded with ``noise_seed``, so a file decodes identically every time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from compressai.layers import ResidualBlock, ResidualBlockUpsample, ResidualBlockWithStride
from torch import Tensor, nn

from osdic.codec.interface import CodecOutput, Compressed, Decompressed
from osdic.models.backbone import DiffusionBackbone
from osdic.models.decode_steps import ENTROPY_DECODING, PAPER_PARTS, StepHook, no_hook
from osdic.models.entropy import HyperpriorCodec
from osdic.checks import ConfigError, config_section, require_int
from osdic.registry import CODEC, register


class StartLatent(nn.Module):
    """y_T, where the one step starts, from the condition y_c, the clean latent y_0 (None when
    decoding) and the noise the codec drew. A module without weights, so a codec package
    records the choice in its config."""

    def __init__(self):
        super().__init__()

    def forward(self, backbone: DiffusionBackbone, y_c: Tensor, y_0: Tensor | None, noise: Tensor,
                t: Tensor) -> Tensor:
        raise NotImplementedError


@register(CODEC)
class PureNoise(StartLatent):
    """Pure Gaussian noise."""

    def forward(self, backbone, y_c, y_0, noise, t):
        return noise


@register(CODEC)
class NoisedCondition(StartLatent):
    """q(y_T | y_c): y_c through the forward process to t."""

    def forward(self, backbone, y_c, y_0, noise, t):
        return backbone.add_noise(y_c, noise, t)


@register(CODEC)
class NoisedClean(StartLatent):
    """q(y_T | y_0) in training (the public code); y_0 is unknown to a decoder, which then starts
    from pure noise: the public code's train/test mismatch, kept only to reproduce it."""

    def forward(self, backbone, y_c, y_0, noise, t):
        return noise if y_0 is None else backbone.add_noise(y_0, noise, t)


class OSDiffOutput(CodecOutput):
    y_hat: Tensor  # the quantised latent of the analysis transform
    y_0: Tensor    # the SD VAE latent of x (the real latent)
    y_c: Tensor    # the synthesis transform's condition
    y_r: Tensor    # the one-step denoised latent (the discriminator's fake)


@register(CODEC)
class OSDiff(HyperpriorCodec):
    def __init__(
        self,
        backbone: DiffusionBackbone,
        context: nn.Module | Callable[..., nn.Module],
        entropy_model: nn.Module | Callable[..., nn.Module],
        control: nn.Module | Callable[..., nn.Module],
        start: StartLatent,
        latent_channels: int = 320,
        residual_blocks: int = 3,
        timestep: int = 999,
        noise_seed: int = 0,
    ):
        super().__init__()
        self.start = start
        require_int("timestep", timestep, minimum=0, below=backbone.num_train_timesteps)
        require_int("latent_channels", latent_channels, minimum=1)
        self.backbone, self.timestep, self.noise_seed = backbone, timestep, noise_seed
        self.context = context if isinstance(context, nn.Module) else context(context_dim=backbone.cross_attention_dim)
        if not callable(getattr(self.context, "tokens", None)):  # image-dependent guidance has no tokens(batch)
            raise ConfigError("context", f"needs a text embedding with tokens(batch) (guidance text, text_tiny, "
                                         f"text_random), got {type(self.context).__name__}")
        sd_channels = backbone.unet.config.in_channels
        self.analysis = nn.Sequential(  # G_a: y_0 (H/8) → y (H/16)
            ResidualBlockWithStride(sd_channels, latent_channels, stride=2),
            *[ResidualBlock(latent_channels, latent_channels) for _ in range(residual_blocks)],
        )
        with config_section("entropy_model"):
            self.entropy_model = entropy_model if isinstance(entropy_model, nn.Module) else entropy_model(
                latent_channels=latent_channels)
        self.synthesis = nn.Sequential(  # G_s: ŷ (H/16) → y_c (H/8)
            *[ResidualBlock(latent_channels, latent_channels) for _ in range(residual_blocks)],
            ResidualBlockUpsample(latent_channels, latent_channels, upsample=2),
            nn.Conv2d(latent_channels, sd_channels, 3, padding=1),
        )
        if isinstance(control, nn.Module):
            self.control = control
        else:
            with config_section("control"):
                self.control = control(unet_config=backbone.unet_config, conditioning_channels=sd_channels)
            self.control.initialise_from(backbone.unet)
        self.control.requires_grad_(True)

    def discriminator_context(self, batch_size: int) -> Tensor:
        return self.context.tokens(batch_size)

    def paper_timed_parts(self, figures: dict[str, float]) -> dict[str, float]:
        """OSDiff's paper times the decoder without entropy decoding."""
        return {PAPER_PARTS: figures["total"] - figures[ENTROPY_DECODING]}

    def start_latent(self, y_c: Tensor, y_0: Tensor | None, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(y_c.shape, generator=generator, device=y_c.device, dtype=y_c.dtype)
        t = torch.full((y_c.shape[0],), self.timestep, device=y_c.device, dtype=torch.long)
        return self.start(self.backbone, y_c, y_0, noise, t)

    def denoise(self, y_t: Tensor, y_c: Tensor) -> Tensor:
        """One controlled UNet step at t = 999 → y_r (ε- or v-prediction, as the backbone)."""
        t = torch.full((y_t.shape[0],), self.timestep, device=y_t.device, dtype=torch.long)
        context = self.context.tokens(y_t.shape[0]).to(y_t.dtype)
        prediction = self.control(self.backbone.unet, y_t, t, context, y_c)
        return self.backbone.to_clean_latent(y_t, t, prediction)

    def forward(self, x: Tensor) -> OSDiffOutput:
        height, width = x.shape[-2:]
        y_0 = self.backbone.encode(self.pad(x))
        out = self.entropy_model(self.analysis(y_0))
        y_c = self.synthesis(out["y_hat"])
        y_r = self.denoise(self.start_latent(y_c, y_0, None), y_c)
        x_hat = self.backbone.decode(y_r)[..., :height, :width]
        return {**out, "x_hat": x_hat, "y_0": y_0, "y_c": y_c, "y_r": y_r}

    # ---------------------------------------------------------------------- real coding
    def compress(self, x: Tensor) -> Compressed:
        with torch.no_grad():
            coded = self.entropy_model.compress(self.analysis(self.backbone.encode(self.pad(x))))
        return {"strings": coded["strings"], "shape": coded["shape"]}

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None,
                   step: StepHook = no_hook) -> Decompressed:
        """Entropy decoding → G_s → start latent → control module + UNet → D_SD, each inside
        ``step(name)``."""
        with step(ENTROPY_DECODING):
            param = next(self.synthesis.parameters())
            y_hat = self.entropy_model.decompress(strings, shape)[0].to(device=param.device, dtype=param.dtype)
        with step("G_s (synthesis)"):
            y_c = self.synthesis(y_hat)
        with step("start latent"):
            generator = torch.Generator(device=y_c.device).manual_seed(self.noise_seed)
            y_t = self.start_latent(y_c, None, generator)
        with step("control module + UNet (one step)"):
            y_r = self.denoise(y_t, y_c)
        with step("D_SD (SD VAE decoder)"):
            x_hat = self.backbone.decode(y_r).float().clamp(0, 1)
            if image_size is not None:
                x_hat = x_hat[..., : image_size[0], : image_size[1]]
        return {"x_hat": x_hat}
