"""SODEC: the VAE compression module steering a one-step diffusion decoder.

    x → E → ŷ, ẑ (bitstreams)                                     (models/hific.py)
    ŷ → D_a → x̂_f → guidance (FGM: ViT F → F_p) → c_g              (models/guidance.py)
    ẑ → H_s → w;  T_s(ŷ, w) → ŷ_t  (4 × H/8 × W/8, SD latent range)
    ŷ_t → ε_θ(ŷ_t, t = 999, c_g) → ŷ_0 → D_m → x̂                   (models/backbone.py)

ŷ_t enters the UNet as is (OSEDiff style, the default) or, with ``input_noise``, after the
forward process to t (seeded when decoding). The module keeps compressai's
contract: ``forward`` returns ``x_hat`` (= x̂) and ``likelihoods``; ``compress`` / ``decompress``
code ŷ and ẑ as the VAE compression module does; ``decompress`` runs the whole decode path.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from osdic.codec.interface import CodecOutput, Compressed, Decompressed, ImageCodec
from osdic.models.backbone import DiffusionBackbone
from osdic.models.decode_steps import ENTROPY_DECODING, StepHook, no_hook
from osdic.models.entropy import hyper_synthesis
from osdic.models.hific import HiFiCCompressor, ResidualBlock
from osdic.checks import require_int
from osdic.registry import CODEC, register


class TransformModule(nn.Module):
    """T_s: concat(ŷ, w) at H/16 → residual conv blocks → ×2 up-sampling → 4 channels at H/8,
    multiplied by the SD VAE's scaling factor so the output lives in the UNet's latent range."""

    def __init__(self, latent_channels: int, w_channels: int, width: int, blocks: int, scaling_factor: float,
                 out_channels: int = 4):
        super().__init__()
        self.scaling_factor = scaling_factor
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels + w_channels, width, 3, padding=1),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
            nn.SiLU(),
        )
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, y_hat: Tensor, w: Tensor) -> Tensor:
        features = self.net(torch.cat([y_hat, w], dim=1))
        # ŷ_t in float32 even under autocast: the one-step conversion to ŷ_0 divides it by √ᾱ_999
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.out(features.float()) * self.scaling_factor


class SODECOutput(CodecOutput):
    context: Tensor       # c_g, the guidance's tokens for cross-attention
    latent_t: Tensor      # ŷ_t, T_s's output (noised with input_noise)
    latent_0: Tensor      # ŷ_0, the UNet's one-step clean latent (the latent discriminator's fake)
    x_hat_f: Tensor | None  # the fidelity image D_a(ŷ), None when neither asked for nor read
    y_hat: Tensor
    z_hat: Tensor


@register(CODEC)
class SODEC(ImageCodec):
    PAD_MULTIPLE = HiFiCCompressor.PAD_MULTIPLE

    def __init__(
        self,
        vae_codec: HiFiCCompressor,
        backbone: DiffusionBackbone,
        guidance: nn.Module | Callable[..., nn.Module],
        w_channels: int = 128,
        transform_width: int = 256,
        transform_blocks: int = 4,
        timestep: int = 999,
        input_noise: bool = False,
        noise_seed: int = 0,
    ):
        super().__init__()
        require_int("timestep", timestep, minimum=0, below=backbone.num_train_timesteps)
        self.vae_codec, self.backbone = vae_codec, backbone
        hyper_channels, latent_channels = vae_codec.hyper_channels, vae_codec.latent_channels
        # a config gives a partial (the widths come from the backbone); a package gives a module
        self.guidance = guidance if isinstance(guidance, nn.Module) else guidance(
            context_dim=backbone.cross_attention_dim, hyper_channels=hyper_channels
        )
        self.hyper_synthesis = hyper_synthesis(hyper_channels, w_channels)  # H_s: ẑ (H/64) → w (H/16)
        self.transform = TransformModule(latent_channels, w_channels, transform_width, transform_blocks,
                                         backbone.scaling_factor)
        self.timestep, self.input_noise, self.noise_seed = timestep, input_noise, noise_seed

    # ------------------------------------------------------------------------- parts
    def generative_parameters(self) -> list[nn.Parameter]:
        """What stage 2 trains besides D_a: H_s, T_s, the guidance's trainable part, the UNet's
        LoRA (or the whole UNet)."""
        return [p for m in (self.hyper_synthesis, self.transform, self.guidance) for p in m.parameters()
                if p.requires_grad] + self.backbone.unet_parameters()

    @property
    def num_strings(self) -> int:
        return self.vae_codec.num_strings

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The VAE compression module's parts, and what generates x̂ from its latents."""
        return {**self.vae_codec.parameter_groups(), "generative": self.generative_parameters()}

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        return self.vae_codec.latent_shape(height, width)

    def generate(self, y_hat: Tensor, z_hat: Tensor, x_hat_f: Tensor | None, image_size: Sequence[int],
                 generator: torch.Generator | None = None, step: StepHook = no_hook) -> dict[str, Tensor]:
        """The generative half: (ŷ, ẑ, x̂_f) → c_g, ŷ_t, ŷ_0, x̂ (cropped to ``image_size``);
        x̂_f may be None when the guidance does not read it.
        With ``input_noise``, T_s's output is taken through the forward process to t first
        (noise from ``generator``; decoding seeds it, so a file decodes the same every time).
        Each part runs inside ``step(name)`` (models/decode_steps.py)."""
        with step("guidance"):
            context = self.guidance(x_hat_f, z_hat)
        with step("H_s + T_s"):
            latent_t = self.transform(y_hat, self.hyper_synthesis(z_hat))
        if self.input_noise:
            with step("input noise"):
                noise = torch.randn(latent_t.shape, generator=generator, device=latent_t.device, dtype=latent_t.dtype)
                t = torch.full((latent_t.shape[0],), self.timestep, device=latent_t.device, dtype=torch.long)
                latent_t = self.backbone.add_noise(latent_t, noise, t)
        with step("UNet (one step)"):
            latent_0 = self.backbone.predict_clean_latent(latent_t, self.timestep, context)
        with step("D_m (SD VAE decoder)"):
            x_hat = self.backbone.decode(latent_0)[..., : image_size[0], : image_size[1]]
        return {"context": context, "latent_t": latent_t, "latent_0": latent_0, "x_hat": x_hat}

    def fidelity_image(self, y_hat: Tensor, image_size: Sequence[int]) -> Tensor:
        """x̂_f = D_a(ŷ), cropped to ``image_size``."""
        return self.vae_codec.fidelity_decoder(y_hat)[..., : image_size[0], : image_size[1]]

    # ---------------------------------------------------------------------- training
    def forward(self, x: Tensor, fidelity_image: bool = True) -> SODECOutput:
        """x̂ and the latents; x̂_f (``x_hat_f``) when asked for or when the guidance reads it,
        otherwise None (D_a then costs nothing)."""
        vae = self.vae_codec.latents(x)
        needed = fidelity_image or self.guidance.uses_fidelity_image
        x_hat_f = self.fidelity_image(vae["y_hat"], x.shape[-2:]) if needed else None
        out = self.generate(vae["y_hat"], vae["z_hat"], x_hat_f, x.shape[-2:])
        return {**out, "x_hat_f": x_hat_f, "likelihoods": vae["likelihoods"],
                "likelihoods_rounded": vae["likelihoods_rounded"], "y_hat": vae["y_hat"], "z_hat": vae["z_hat"]}

    # ------------------------------------------------------------------ real coding
    def update(self, force: bool = False) -> bool:
        return self.vae_codec.update(force=force)

    def aux_loss(self) -> Tensor:
        return self.vae_codec.aux_loss()

    def aux_parameters(self):
        return self.vae_codec.aux_parameters()

    def compress(self, x: Tensor) -> Compressed:
        return self.vae_codec.compress(x)

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None,
                   step: StepHook = no_hook) -> Decompressed:
        """Entropy decoding → D_a → guidance → H_s/T_s (→ input noise) → one UNet step → D_m, each
        inside ``step(name)``."""
        with step(ENTROPY_DECODING):
            y_hat, z_hat = self.vae_codec.decode_latents(strings, shape)
            param = next(self.transform.parameters())
            y_hat, z_hat = (t.to(device=param.device, dtype=param.dtype) for t in (y_hat, z_hat))
        if image_size is None:
            image_size = (y_hat.shape[-2] * 16, y_hat.shape[-1] * 16)
        with step("D_a (fidelity decoder)"):
            x_hat_f = self.fidelity_image(y_hat, image_size)
        generator = torch.Generator(device=y_hat.device).manual_seed(self.noise_seed)
        out = self.generate(y_hat, z_hat, x_hat_f, image_size, generator, step)
        return {"x_hat": out["x_hat"].float().clamp(0, 1), "x_hat_f": x_hat_f.float().clamp(0, 1)}
