"""Entropy models of the latent y, with real coding to bytes.

  HyperpriorEntropyModel  y → H_a → z → Q → ẑ (factorised EntropyBottleneck); ẑ → P → (σ, μ) of ŷ
                       (GaussianConditional). HiFiC's, and OSDiff's option.
  ElicEntropyModel     ELIC's space-channel context model (He et al. 2022), assembled from
                       compressai's latent codecs: the same hyperprior, then y coded in uneven
                       channel groups, each in two checkerboard passes, its Gaussian parameters
                       predicted from ẑ, the already decoded groups and the group's anchors.
                       OSDiff's public code's model.

Training rates use additive uniform noise; ``likelihoods_rounded`` (no gradient) gives the rate of
the rounded latents the real files code, which a rate controller must steer (the noisy estimate
differs from it by up to 3× early in training and does not follow λ as closely: BENCHMARKS.md,
λ controller). Both models take it from the entropy layers' own call (:class:`RoundedRateGaussian`,
:class:`RoundedRateBottleneck`): the Gaussian parameters of training and evaluation are the same,
since every network that derives them sees rounded values (straight-through) in both. The
decoder input is ŷ rounded around μ with a straight-through gradient, ẑ rounded around the
bottleneck's medians likewise. For real coding the networks that derive entropy parameters
always run in float32 on the CPU: encoder and decoder must derive bit-identical Gaussian indexes
and means whatever device or dtype each runs on.
Coding itself goes through compressai's ``EntropyBottleneck`` and ``GaussianConditional`` only.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import weakref
from typing import Iterator, Sequence

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import (
    ChannelGroupsLatentCodec,
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d, sequential_channel_ramp
from compressai.models import CompressionModel

from osdic.codec.interface import ImageCodec, without_quantiles
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

from osdic.checks import ConfigError, require_int
from osdic.registry import CODEC, register

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


def rate_terms(out: dict, num_pixels: int) -> dict[str, Tensor]:
    """``bpp`` (the estimate, differentiable) of a codec's output and, in training, where it is
    measured with noise, ``bpp_rounded`` (the rounded latents', what the files code)."""
    terms = {"bpp": rate_bpp(out["likelihoods"], num_pixels)}
    if out["likelihoods_rounded"] is not out["likelihoods"]:
        terms["bpp_rounded"] = rate_bpp(out["likelihoods_rounded"], num_pixels)
    return terms


# Lower bound of the Gaussian scale and the table the entropy coder quantises scales to.
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> Tensor:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


# ------------------------------------------------------------ bit-exact entropy parameters
_FLOAT32_CPU_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def float32_cpu(module: nn.Module) -> nn.Module:
    """``module`` when it computes in float32 on the CPU, else a float32 CPU copy of it, made
    once per weight version (in-place updates bump ``_version``, reassignments change the
    pointer) and kept outside the module tree, so ``to()``, ``state_dict()`` and optimizers
    never see it."""
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return module
    version = tuple((t.device, t.data_ptr(), t._version) for t in tensors)
    cached = _FLOAT32_CPU_COPIES.get(module)
    if cached is None or cached[0] != version:
        with torch.inference_mode(False):  # a copy made while decoding serves later calls too
            twin = copy.deepcopy(module).to(device="cpu", dtype=torch.float32).requires_grad_(False)
        cached = _FLOAT32_CPU_COPIES[module] = (version, twin)
    return cached[1]


_CODING = contextvars.ContextVar("bit_exact_coding", default=False)


@contextlib.contextmanager
def bit_exact_coding() -> Iterator[None]:
    """Within: every :class:`BitExact` network runs in float32 on the CPU."""
    token = _CODING.set(True)
    try:
        yield
    finally:
        _CODING.reset(token)


class BitExact(nn.Module):
    """A network that both the encoder and the decoder evaluate to derive entropy parameters.
    In training it runs as any module; under :func:`bit_exact_coding` it runs in float32 on
    the CPU (see :func:`float32_cpu`) and hands its output back, in float32, on its input's
    device, where the entropy models' own element-wise arithmetic is exact on every device."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        if not _CODING.get():
            return self.network(x)
        with torch.autocast(device_type="cpu", enabled=False):
            return float32_cpu(self.network)(x.to(device="cpu", dtype=torch.float32)).to(x.device)


class _KeepsRoundedLikelihoods:
    """An entropy layer that, when called in training, also keeps (no gradient) the likelihoods
    evaluation gives for the same inputs and parameters: of the latent rounded (around μ, or
    around the bottleneck's medians). ``training`` is passed by keyword, as compressai does."""

    _rounded_likelihoods: Tensor | None = None

    def forward(self, *args, training: bool | None = None, **kwargs):
        out = super().forward(*args, training=training, **kwargs)
        training = self.training if training is None else training
        if training:
            with torch.no_grad():
                self._rounded_likelihoods = super().forward(*args, training=False, **kwargs)[1]
        return out

    def take_rounded_likelihoods(self) -> Tensor:
        """Those of the last call in training, once: a parent that reads them again, or after a
        call outside training, fails instead of reading an older batch's."""
        likelihoods, self._rounded_likelihoods = self._rounded_likelihoods, None
        if likelihoods is None:
            raise RuntimeError(f"{type(self).__name__} has no rounded likelihoods: it was not called in training")
        return likelihoods


class RoundedRateGaussian(_KeepsRoundedLikelihoods, GaussianConditional):
    pass


class RoundedRateBottleneck(_KeepsRoundedLikelihoods, EntropyBottleneck):
    pass


def update_entropy_models(module: nn.Module, force: bool = False) -> bool:
    """The coding tables of every entropy model in ``module`` for its current weights."""
    updated = False
    for entropy_model in module.modules():
        if isinstance(entropy_model, EntropyBottleneck):
            updated |= entropy_model.update(force=force)
        elif isinstance(entropy_model, GaussianConditional):
            updated |= entropy_model.update_scale_table(scale_table(), force=force)
    return updated


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


#: what the decoder is given for ŷ in training (evaluation and real coding always round):
#:   rounded  round(y − μ) + μ with a straight-through gradient (HiFiC; what the decoder will see)
#:   noisy    y + U(−½, ½), the rate's own surrogate (compressai's models): a small codec trained
#:            with ``rounded`` can learn to keep y within ½ of μ, so the decoder sees μ alone and
#:            the rate collapses whatever λ (BENCHMARKS.md, learning speed)
DECODER_INPUTS = ("rounded", "noisy")


@register(CODEC, aliases=("osdic.models.entropy.MeanScaleHyperprior",))  # its name until compressai's clashed
class HyperpriorEntropyModel(nn.Module):
    #: strings per image: ŷ, then ẑ
    num_strings = 2

    def __init__(self, latent_channels: int, hyper_channels: int = 192, decoder_input: str = "rounded"):
        super().__init__()
        require_int("hyper_channels", hyper_channels, minimum=1)
        if decoder_input not in DECODER_INPUTS:
            raise ConfigError("decoder_input", f"must be one of {', '.join(DECODER_INPUTS)}, got {decoder_input!r}")
        self.decoder_input = decoder_input
        self.hyper_encoder = hyper_analysis(latent_channels, hyper_channels)
        self.entropy_parameters = EntropyParameters(hyper_channels, latent_channels)
        self.entropy_bottleneck = RoundedRateBottleneck(hyper_channels)
        self.gaussian_conditional = RoundedRateGaussian(None, scale_bound=SCALE_MIN)

    def forward(self, y: Tensor) -> dict:
        z = self.hyper_encoder(y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            y, z = y.float(), z.float()
            _, z_likelihoods = self.entropy_bottleneck(z)
            z_offset = self.entropy_bottleneck._get_medians().detach()
            z_hat = quantize_ste(z - z_offset) + z_offset
            scales, means = self.entropy_parameters(z_hat)
            y_noisy, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
            if self.training and self.decoder_input == "noisy":  # the very sample the rate is measured on
                y_hat = y_noisy
            else:
                y_hat = quantize_ste(y - means) + means
            likelihoods = {"y": y_likelihoods, "z": z_likelihoods}
            rounded = likelihoods
            if self.training:
                rounded = {"y": self.gaussian_conditional.take_rounded_likelihoods(),
                           "z": self.entropy_bottleneck.take_rounded_likelihoods()}
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": likelihoods, "likelihoods_rounded": rounded}

    def update(self, force: bool = False) -> bool:
        return update_entropy_models(self, force)

    def _cpu_entropy_parameters(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type="cpu", enabled=False):
            return float32_cpu(self.entropy_parameters)(z_hat.to(device="cpu", dtype=torch.float32))

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


def _convs(widths: Sequence[int], kernel_size: int) -> nn.Sequential:
    """Stride-1 convolutions through ``widths`` with ReLUs between them."""
    layers: list[nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [conv(cin, cout, kernel_size=kernel_size, stride=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


@register(CODEC)
class ElicEntropyModel(nn.Module):
    """ELIC's entropy model as compressai's ``Elic2022Official`` assembles it, on a given y.

    ẑ → h_s → hyper parameters (2N channels). y is split into uneven channel ``groups``; group k
    is coded in two checkerboard passes (anchors, then the rest with the anchors as spatial
    context g_sp), its Gaussian (σ, μ) aggregated by 1×1 convs from the hyper parameters, the
    spatial context and a channel context g_ch of the groups decoded before it. Each group and
    pass is its own rANS string, ẑ the last: ``num_strings`` = 2 × groups + 1.
    """

    def __init__(
        self,
        latent_channels: int,
        hyper_channels: int = 192,
        groups: Sequence[int] = (8, 8, 8, 8, 16, 16, 32, 32, 96, 96),
        context_channels: Sequence[int] = (224, 128),
    ):
        super().__init__()
        require_int("hyper_channels", hyper_channels, minimum=1)
        groups = [require_int("groups", g, minimum=1) for g in groups]
        context_channels = [require_int("context_channels", c, minimum=1) for c in context_channels]
        if sum(groups) != latent_channels:
            raise ConfigError("groups", f"{groups} add up to {sum(groups)} channels; the latent y has {latent_channels}")
        self.groups = groups
        hyper_params = 2 * hyper_channels
        h_s = nn.Sequential(
            deconv(hyper_channels, hyper_channels, kernel_size=5, stride=2), nn.ReLU(inplace=True),
            deconv(hyper_channels, hyper_params * 3 // 4, kernel_size=5, stride=2), nn.ReLU(inplace=True),
            deconv(hyper_params * 3 // 4, hyper_params, kernel_size=3, stride=1),
        )
        channel_context = {  # g_ch: the groups decoded before k → 2 × groups[k]
            f"y{k}": BitExact(_convs([sum(groups[:k]), *context_channels, 2 * groups[k]], kernel_size=5))
            for k in range(1, len(groups))
        }
        group_codecs = {
            f"y{k}": CheckerboardLatentCodec(
                latent_codec={"y": GaussianConditionalLatentCodec(
                    gaussian_conditional=RoundedRateGaussian(None, scale_bound=SCALE_MIN), quantizer="ste")},
                # g_sp: the anchors of this group → 2 × group
                context_prediction=BitExact(CheckerboardMaskedConv2d(group, 2 * group, kernel_size=5, padding=2)),
                # spatial context, channel context (after the first group) and hyper parameters → (σ, μ)
                entropy_parameters=BitExact(sequential_channel_ramp(
                    2 * group + 2 * group * (k > 0) + hyper_params, 2 * group, min_ch=hyper_params, num_layers=3,
                    interp="linear", make_layer=nn.Conv2d, make_act=lambda: nn.ReLU(inplace=True), kernel_size=1,
                )),
            )
            for k, group in enumerate(groups)
        }
        self.latent_codec = HyperpriorLatentCodec(latent_codec={
            "y": ChannelGroupsLatentCodec(groups=groups, channel_context=channel_context, latent_codec=group_codecs),
            "hyper": HyperLatentCodec(RoundedRateBottleneck(hyper_channels),
                                      hyper_analysis(latent_channels, hyper_channels),
                                      BitExact(h_s), quantizer="ste"),
        })

    @property
    def num_strings(self) -> int:
        return 2 * len(self.groups) + 1

    def forward(self, y: Tensor) -> dict:
        with torch.autocast(device_type=y.device.type, enabled=False):
            out = self.latent_codec(y.float())
            rounded = out["likelihoods"]
            if self.training:
                layers = [self.latent_codec.y.latent_codec[f"y{k}"].latent_codec["y"].gaussian_conditional
                          for k in range(len(self.groups))]
                rounded = {"y": torch.cat([layer.take_rounded_likelihoods() for layer in layers], dim=1),
                           "z": self.latent_codec.hyper.entropy_bottleneck.take_rounded_likelihoods()}
        return {"y_hat": out["y_hat"], "likelihoods": out["likelihoods"], "likelihoods_rounded": rounded}

    def update(self, force: bool = False) -> bool:
        return update_entropy_models(self, force)

    @torch.no_grad()
    def compress(self, y: Tensor) -> dict:
        """y (any device/dtype) → strings [ŷ's per group and pass…, ẑ], z's shape, and ŷ as
        decoded (float32, on y's device)."""
        hyper, channel_groups = self.latent_codec.hyper, self.latent_codec.y
        z = hyper.h_a(y)  # in the caller's dtype and autocast: only the encoder computes z
        with torch.autocast(device_type=y.device.type, enabled=False), bit_exact_coding():
            z_strings = hyper.entropy_bottleneck.compress(z.float())
            z_hat = hyper.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
            out = channel_groups.compress(y.float(), hyper.h_s(z_hat))
        return {"strings": [*out["strings"], z_strings], "shape": tuple(z.shape[-2:]), "y_hat": out["y_hat"]}

    @torch.no_grad()
    def decompress(self, strings: list, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Entropy decoding only: strings → (ŷ, ẑ) in float32 on this model's device."""
        *y_strings, z_strings = strings
        hyper, channel_groups = self.latent_codec.hyper, self.latent_codec.y
        height, width = (4 * side for side in shape)  # H_a downsamples y twice
        with bit_exact_coding():
            z_hat = hyper.entropy_bottleneck.decompress(z_strings, tuple(shape))
            side_params = hyper.h_s(z_hat)
            y_hat = channel_groups.decompress(y_strings, [(g, height, width) for g in self.groups], side_params)["y_hat"]
        return y_hat, z_hat


#: the entropy models a codec holds (their networks, not the bottleneck's quantiles, which the aux
#: optimizer trains): what ``entropy_model_lr`` of the training modules applies to
ENTROPY_MODELS = (HyperpriorEntropyModel, ElicEntropyModel)


class HyperpriorCodec(CompressionModel, ImageCodec):
    """What the codecs built on a hyperprior entropy model (``self.entropy_model``) share:
    padding, z's shape, the main/aux parameter split and ``update()``."""

    PAD_MULTIPLE = PAD_MULTIPLE

    @property
    def num_strings(self) -> int:
        return self.entropy_model.num_strings

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Each part the codec is built of, by its name."""
        return {name: without_quantiles(part) for name, part in self.named_children()}

    def pad(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.PAD_MULTIPLE)

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        return hyper_latent_shape(height, width, self.PAD_MULTIPLE)

    def aux_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.endswith("quantiles")]

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        return self.entropy_model.update(force=force)
