"""HiFiC's compression autoencoder (Mentzer et al. 2020) as SODEC's VAE compression module.

x → E → y → Q → ŷ (bitstream 1);  y → H_a → z → Q → ẑ (bitstream 2);  ẑ → P → (μ, σ) of ŷ;
ŷ → D_a → x̂_f.  Images are in [0, 1] at every boundary of this module.

The module follows compressai's contract: ``forward`` returns ``x_hat`` and ``likelihoods``
(plus ``y_hat``/``z_hat`` that SODEC's diffusion decoder consumes), ``compress`` returns the
entropy-coded strings, ``decompress`` takes them back, ``update()`` must run before real coding.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from osdic.codec.interface import CodecOutput, Compressed, Decompressed, without_quantiles
from osdic.models.decode_steps import ENTROPY_DECODING, StepHook, no_hook
from osdic.models.entropy import HyperpriorCodec, HyperpriorEntropyModel
from osdic.checks import ConfigError
from osdic.registry import CODEC, register

class ChannelNorm(nn.Module):
    """HiFiC's ChannelNorm: normalise each spatial position across channels (batch-size free)."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # layer_norm over the channels of an NHWC view: one fused kernel each way, 2.6× faster on a
        # CPU than mean/var and four elementwise ops (bench/learning.py spends a third of a step here)
        channels_last = x.permute(0, 2, 3, 1)
        normalised = F.layer_norm(channels_last, channels_last.shape[-1:], self.weight.view(-1), self.bias.view(-1),
                                  self.eps)
        return normalised.permute(0, 3, 1, 2)


#: where HiFiC's ChannelNorm goes → (on the two outer layers: after E's first conv and on ŷ at D_a's
#: input, on every other layer): every layer (the paper), all but the outer two, or nowhere
CHANNEL_NORM_PLACES = {"all": (True, True), "inner": (False, True), "none": (False, False)}


def _norm(channels: int, on: bool) -> nn.Module:
    return ChannelNorm(channels) if on else nn.Identity()


def _norm_relu(channels: int, norm: bool, inverse: bool = False) -> list[nn.Module]:
    return [_norm(channels, norm), nn.ReLU(inplace=True)]


def _gdn(channels: int, norm: bool, inverse: bool = False) -> list[nn.Module]:
    return [GDN(channels, inverse=inverse)]


#: the nonlinearity after each of E's stride-2 convs and D_a's transposed convs, by name → its
#: layers (channels, whether ``channel_norm`` puts a norm there, inverse in D_a): HiFiC's ChannelNorm
#: and ReLU, or GDN in E and inverse GDN in D_a (Ballé et al. 2017, compressai's models), which
#: learned ~2 dB faster at the demo's width
RESAMPLING_NONLINEARITIES = {"norm_relu": _norm_relu, "gdn": _gdn}


def _conv_block(cin: int, cout: int, kernel: int, stride: int, norm: bool, nonlinearity=_norm_relu) -> list[nn.Module]:
    before, after = ((kernel - 3) // 2, (kernel - 1) // 2) if stride == 2 else (kernel // 2, kernel // 2)
    return [
        nn.ReflectionPad2d((before, after, before, after)),
        nn.Conv2d(cin, cout, kernel, stride=stride),
        *nonlinearity(cout, norm),
    ]


class HiFiCEncoder(nn.Module):
    """E: 7×7 conv to channels[0] at full resolution (or, without ``full_resolution_layers``, a 5×5
    stride-2 conv to it), stride-2 3×3 convs through the other widths, 3×3 conv to y."""

    def __init__(self, channels: Sequence[int], latent_channels: int, in_channels: int = 3, channel_norm: str = "all",
                 resampling_nonlinearity: str = "norm_relu", full_resolution_layers: bool = True):
        super().__init__()
        outer, inner = CHANNEL_NORM_PLACES[channel_norm]
        nonlinearity = RESAMPLING_NONLINEARITIES[resampling_nonlinearity]
        if full_resolution_layers:
            layers = _conv_block(in_channels, channels[0], 7, 1, norm=outer)
        else:
            layers = _conv_block(in_channels, channels[0], 5, 2, norm=outer, nonlinearity=nonlinearity)
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += _conv_block(cin, cout, 3, 2, norm=inner, nonlinearity=nonlinearity)
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels[-1], latent_channels, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels, norm), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class HiFiCGenerator(nn.Module):
    """D_a: HiFiC's generator — residual blocks at the widest width with a global skip, stride-2
    transposed convs back through the encoder's widths, and a 7×7 conv to RGB (or, without
    ``full_resolution_layers``, a 5×5 stride-2 transposed conv from channels[0] to RGB)."""

    def __init__(self, channels: Sequence[int], latent_channels: int, residual_blocks: int, out_channels: int = 3,
                 channel_norm: str = "all", resampling_nonlinearity: str = "norm_relu", full_resolution_layers: bool = True):
        super().__init__()
        widest, (outer, inner) = channels[-1], CHANNEL_NORM_PLACES[channel_norm]
        self.head = nn.Sequential(
            _norm(latent_channels, outer),
            nn.ReflectionPad2d(1), nn.Conv2d(latent_channels, widest, 3), _norm(widest, inner),
        )
        self.residual = nn.Sequential(*[ResidualBlock(widest, inner) for _ in range(residual_blocks)])
        up: list[nn.Module] = []
        nonlinearity = RESAMPLING_NONLINEARITIES[resampling_nonlinearity]
        widths = list(reversed(channels))
        for cin, cout in zip(widths[:-1], widths[1:]):
            up += [
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                *nonlinearity(cout, inner, inverse=True),
            ]
        if full_resolution_layers:
            up += [nn.ReflectionPad2d(3), nn.Conv2d(widths[-1], out_channels, 7)]
        else:
            up += [nn.ConvTranspose2d(widths[-1], out_channels, 5, stride=2, padding=2, output_padding=1)]
        self.up = nn.Sequential(*up)

    def forward(self, y_hat: Tensor) -> Tensor:
        h = self.head(y_hat)
        return (self.up(h + self.residual(h)) + 1) / 2


class HiFiCOutput(CodecOutput):
    y_hat: Tensor
    z_hat: Tensor


@register(CODEC)
class HiFiCCompressor(HyperpriorCodec):
    """SODEC's VAE compression module: E, H_a, P and the fidelity decoder D_a."""


    def __init__(
        self,
        latent_channels: int = 220,
        encoder_channels: Sequence[int] = (60, 120, 240, 480, 960),
        hyper_channels: int = 320,
        residual_blocks: int = 9,
        channel_norm: str = "all",
        decoder_input: str = "rounded",
        resampling_nonlinearity: str = "norm_relu",
        full_resolution_layers: bool = True,
    ):
        """``channel_norm``: where HiFiC's ChannelNorm goes (:data:`CHANNEL_NORM_PLACES`). Each one
        normalises away a per-pixel magnitude the next layer must rebuild, which matters at a small
        width (BENCHMARKS.md, learning speed of the stage-1 recipe). ``decoder_input``: ŷ as D_a
        sees it in training (:data:`osdic.models.entropy.DECODER_INPUTS`). ``resampling_nonlinearity``:
        :data:`RESAMPLING_NONLINEARITIES` (HiFiC's is ``norm_relu``). ``full_resolution_layers``: E starts
        and D_a ends with a 7×7 conv at full resolution (HiFiC), or without them E starts with a 5×5
        stride-2 conv and D_a ends with a 5×5 stride-2 transposed conv (Ballé et al.'s transforms):
        at a small width the full-resolution layers cost half of a training step's CPU time and
        learned slower (BENCHMARKS.md, learning speed). ŷ is at 1/16 of the image either way, so
        ``encoder_channels`` has five widths with the full-resolution layers and four without."""
        super().__init__()
        encoder_channels = list(encoder_channels)
        count, layers = (5, "a 7×7 conv, then four stride-2 convs") if full_resolution_layers else (4, "four stride-2 convs")
        if len(encoder_channels) != count:
            raise ConfigError("encoder_channels", f"needs {count} widths ({layers}; full_resolution_layers="
                                                  f"{full_resolution_layers}), got {encoder_channels}")
        for key, value in [("latent_channels", latent_channels), ("hyper_channels", hyper_channels)]:
            if value <= 0:
                raise ConfigError(key, f"must be > 0, got {value}")
        if residual_blocks < 0:
            raise ConfigError("residual_blocks", f"must be >= 0, got {residual_blocks}")
        if channel_norm not in CHANNEL_NORM_PLACES:
            raise ConfigError("channel_norm", f"must be one of {', '.join(CHANNEL_NORM_PLACES)}, got {channel_norm!r}")
        if resampling_nonlinearity not in RESAMPLING_NONLINEARITIES:
            raise ConfigError("resampling_nonlinearity", f"must be one of {', '.join(RESAMPLING_NONLINEARITIES)}, "
                                                         f"got {resampling_nonlinearity!r}")
        self.latent_channels, self.hyper_channels = latent_channels, hyper_channels
        layout = dict(channel_norm=channel_norm, resampling_nonlinearity=resampling_nonlinearity,
                      full_resolution_layers=full_resolution_layers)
        self.encoder = HiFiCEncoder(encoder_channels, latent_channels, **layout)
        self.entropy_model = HyperpriorEntropyModel(latent_channels, hyper_channels, decoder_input)
        self.fidelity_decoder = HiFiCGenerator(encoder_channels, latent_channels, residual_blocks, **layout)

    # ---------------------------------------------------------------------------- training
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """E and H_a (what codes x), P and ẑ's density (only the rate term reaches them), D_a."""
        entropy = self.entropy_model
        return {"analysis": without_quantiles(self.encoder) + without_quantiles(entropy.hyper_encoder),
                "rate_model": without_quantiles(entropy.entropy_parameters) + without_quantiles(entropy.entropy_bottleneck),
                "fidelity_decoder": without_quantiles(self.fidelity_decoder)}

    def latents(self, x: Tensor) -> dict:
        """ŷ, ẑ and their likelihoods for training/validation (rates with noise in training,
        rounding in eval), without decoding."""
        return self.entropy_model(self.encoder(self.pad(x)))

    def forward(self, x: Tensor) -> HiFiCOutput:
        out = self.latents(x)
        out["x_hat"] = self.fidelity_decoder(out["y_hat"])[..., : x.shape[-2], : x.shape[-1]]
        return out

    # ------------------------------------------------------------------------ real coding
    def encode_latents(self, x: Tensor) -> dict:
        """The coding half of ``compress``: strings for ŷ and ẑ plus ŷ, ẑ themselves (on the CPU)."""
        with torch.no_grad():
            return self.entropy_model.compress(self.encoder(self.pad(x)))

    def compress(self, x: Tensor) -> Compressed:
        """x in [0, 1], any size → {"strings": [y_strings, z_strings], "shape": z's (h, w)}."""
        coded = self.encode_latents(x)
        return {"strings": coded["strings"], "shape": coded["shape"]}

    def decode_latents(self, strings: list, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Entropy decoding only: strings → (ŷ, ẑ) on the CPU in float32."""
        return self.entropy_model.decompress(strings, shape)

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None,
                   step: StepHook = no_hook) -> Decompressed:
        """Strings → {"x_hat"} in [0, 1], cropped to ``image_size`` when given; entropy decoding
        and D_a each inside ``step(name)``."""
        with step(ENTROPY_DECODING):
            param = next(self.fidelity_decoder.parameters())
            y_hat = self.decode_latents(strings, shape)[0].to(device=param.device, dtype=param.dtype)
        with step("D_a (fidelity decoder)"):
            x_hat = self.fidelity_decoder(y_hat).float().clamp(0, 1)
            if image_size is not None:
                x_hat = x_hat[..., : image_size[0], : image_size[1]]
        return {"x_hat": x_hat}
