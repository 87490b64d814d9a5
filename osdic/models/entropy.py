"""The mean-scale hyperprior entropy model shared by the codecs (HiFiC's, and OSDiff's on SD
latents): y → H_a → z → Q → ẑ (factorised EntropyBottleneck); ẑ → P → (σ, μ) of ŷ
(GaussianConditional).

Training rates use additive uniform noise; the decoder input is ŷ rounded around μ with a
straight-through gradient, ẑ rounded around the bottleneck's medians likewise. For real coding
the entropy parameters are always computed in float32 on the CPU: encoder and decoder must derive
bit-identical Gaussian indexes whatever device or dtype each runs on.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

#: total down-sampling from the image to z: images are padded to a multiple of it for coding
PAD_MULTIPLE = 64


def pad_to_multiple(x: Tensor, multiple: int = PAD_MULTIPLE) -> Tensor:
    """Replicate-pad the bottom/right so both sides are multiples of ``multiple``."""
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def hyper_latent_shape(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """Spatial shape of z for an image of this size (what decoding needs)."""
    return math.ceil(height / multiple), math.ceil(width / multiple)


def rate_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel of a batch: −Σ log2 p over all latents / (batch × original pixels)."""
    batch = next(iter(likelihoods.values())).shape[0]
    bits = sum(torch.log(p.float()).sum() for p in likelihoods.values()) / -math.log(2)
    return bits / (batch * num_pixels)


# Lower bound of the Gaussian scale and the table the entropy coder quantises scales to.
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> Tensor:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def hyper_analysis(latent_channels: int, hyper_channels: int) -> nn.Sequential:
    """H_a: y (H/16) → z (H/64)."""
    return nn.Sequential(
        conv(latent_channels, hyper_channels, kernel_size=3, stride=1), nn.ReLU(inplace=True),
        conv(hyper_channels, hyper_channels, kernel_size=5, stride=2), nn.ReLU(inplace=True),
        conv(hyper_channels, hyper_channels, kernel_size=5, stride=2),
    )


def hyper_synthesis(hyper_channels: int, out_channels: int) -> nn.Sequential:
    """ẑ (H/64) → a tensor at H/16."""
    return nn.Sequential(
        deconv(hyper_channels, hyper_channels, kernel_size=5, stride=2), nn.ReLU(inplace=True),
        deconv(hyper_channels, hyper_channels, kernel_size=5, stride=2), nn.ReLU(inplace=True),
        conv(hyper_channels, out_channels, kernel_size=3, stride=1),
    )


class EntropyParameters(nn.Module):
    """P: ẑ → (scales, means) of ŷ (HiFiC's separate mean and scale networks)."""

    def __init__(self, hyper_channels: int, latent_channels: int):
        super().__init__()
        self.means = hyper_synthesis(hyper_channels, latent_channels)
        self.scales = hyper_synthesis(hyper_channels, latent_channels)

    def forward(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        return self.scales(z_hat), self.means(z_hat)


class MeanScaleHyperprior(nn.Module):
    def __init__(self, latent_channels: int, hyper_channels: int):
        super().__init__()
        self.hyper_encoder = hyper_analysis(latent_channels, hyper_channels)
        self.entropy_parameters = EntropyParameters(hyper_channels, latent_channels)
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_MIN)

    def forward(self, y: Tensor) -> dict:
        z = self.hyper_encoder(y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            y, z = y.float(), z.float()
            _, z_likelihoods = self.entropy_bottleneck(z)
            z_offset = self.entropy_bottleneck._get_medians().detach()
            z_hat = quantize_ste(z - z_offset) + z_offset
            scales, means = self.entropy_parameters(z_hat)
            _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
            y_hat = quantize_ste(y - means) + means
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def update(self, force: bool = False) -> bool:
        updated = self.entropy_bottleneck.update(force=force)
        return self.gaussian_conditional.update_scale_table(scale_table(), force=force) or updated

    def _cpu_entropy_parameters(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        params = self.entropy_parameters
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params.parameters()):
            # one float32 CPU copy per weight version (in-place updates bump ``_version``), not per call
            version = tuple((p.data_ptr(), p._version) for p in params.parameters())
            if getattr(self, "_cpu_copy_version", None) != version:
                self._cpu_copy = copy.deepcopy(params).to(device="cpu", dtype=torch.float32)
                self._cpu_copy_version = version
            params = self._cpu_copy
        with torch.autocast(device_type="cpu", enabled=False):
            return params(z_hat.to(device="cpu", dtype=torch.float32))

    @torch.no_grad()
    def compress(self, y: Tensor) -> dict:
        """y (any device/dtype) → strings [ŷ, ẑ], z's shape, and ŷ, ẑ as decoded (CPU, float32)."""
        z = self.hyper_encoder(y)
        y, z = y.float().cpu(), z.float().cpu()
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self._cpu_entropy_parameters(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        y_hat = self.gaussian_conditional.quantize(y, "dequantize", means)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:]), "y_hat": y_hat, "z_hat": z_hat}

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Entropy decoding only: strings → (ŷ, ẑ) on the CPU in float32."""
        z_hat = self.entropy_bottleneck.decompress(strings[1], tuple(shape))
        scales, means = self._cpu_entropy_parameters(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(strings[0], indexes, means=means), z_hat


class HyperpriorCodec(CompressionModel):
    """What the codecs built on :class:`MeanScaleHyperprior` (``self.entropy_model``) share:
    padding, z's shape, the main/aux parameter split and ``update()``."""

    PAD_MULTIPLE = PAD_MULTIPLE
    #: strings per image: ŷ, then ẑ.
    NUM_STRINGS = 2

    def pad(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.PAD_MULTIPLE)

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        return hyper_latent_shape(height, width, self.PAD_MULTIPLE)

    def main_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters but the entropy bottleneck's quantiles (the aux loss trains those)."""
        return [p for name, p in self.named_parameters() if p.requires_grad and not name.endswith("quantiles")]

    def aux_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.endswith("quantiles")]

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        return self.entropy_model.update(force=force)
