"""Evaluation metrics, each named by its variant, on 8-bit-rounded images in [0, 1].

Per-image metrics (averaged over a dataset): psnr (RGB), ms_ssim (RGB), ms_ssim_y (the Y
channel of BT.601 YCbCr with the 16–235 range, pyiqa's convention), lpips_alex, lpips_vgg,
dists, clipiqa and musiq (no reference: scored on the reconstruction, as pyiqa computes them:
:mod:`osdic.metrics.iqa`). Distribution metrics: fid256 and
kid256 on 256×256 patches with HiFiC's half-shifted second pass (:func:`fid_patches`).

Every metric with a pretrained backbone checks that its weights are on disk and otherwise stops
with :class:`MissingWeightsError` naming the file; ``allow_random_weights`` (tests only) runs it
on random weights instead and its ``random_weights`` flag makes every output say so.

A metric that is not defined for an image raises :class:`MetricNotAvailable` with the reason;
it is never replaced by a different computation under the same name (MS-SSIM on fewer scales).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from osdic.metrics.iqa import PyIQAMetric
from osdic.metrics.perceptual import LPIPS, torchvision_weights_path

from osdic.checks import ConfigError, MissingWeightsError
from osdic.utils.modules import ExternalWeights

DISTRIBUTION = ("fid256", "kid256")
PATCH = 256
#: MS-SSIM's 5 scales with an 11-px window: torchmetrics needs side // 16 > 10 on both sides.
MS_SSIM_MIN_SIDE = 176


class MetricNotAvailable(ValueError):
    """The metric is not defined for this input; the message says why."""


def quantize_8bit(x: Tensor) -> Tensor:
    """What a decoder writes to a PNG: clamp to [0, 1] and round to 8 bits."""
    return x.float().clamp(0, 1).mul(255).round().div(255)


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma in [16/255, 235/255] (pyiqa's ``rgb2ycbcr``), x in [0, 1]."""
    weights = torch.tensor([65.481, 128.553, 24.966], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x * weights).sum(dim=1, keepdim=True) + 16.0) / 255.0


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    mse = torch.mean((x_hat - x) ** 2, dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ms_ssim(x_hat: Tensor, x: Tensor) -> Tensor:
    height, width = x.shape[-2:]
    if min(height, width) < MS_SSIM_MIN_SIDE:
        raise MetricNotAvailable(f"{height}×{width} is under MS-SSIM's minimum side of {MS_SSIM_MIN_SIDE} px")
    return multiscale_structural_similarity_index_measure(x_hat, x, data_range=1.0, reduction="none")


def ms_ssim_y(x_hat: Tensor, x: Tensor) -> Tensor:
    return ms_ssim(rgb_to_y(x_hat), rgb_to_y(x))


@contextlib.contextmanager
def _random_vgg16_for_dists():
    """torchmetrics' DISTS builds torchvision's VGG16 with pretrained weights: build it with
    random ones instead (tests' ``allow_random_weights``)."""
    import torchvision.models as tvm
    import torchmetrics.functional.image.dists as dists_module

    original = dists_module.vgg16
    dists_module.vgg16 = lambda *args, **kwargs: tvm.vgg16(weights=None)
    try:
        yield
    finally:
        dists_module.vgg16 = original


class DISTS(ExternalWeights):
    """torchmetrics' DISTS network (VGG16 from torchvision + DISTS' α/β shipped in torchmetrics)."""

    reloadable = True  # a metric: always rebuilt, never stored

    def __init__(self, allow_random_weights: bool):
        super().__init__()
        from torchmetrics.functional.image.dists import DISTSNetwork

        self.random_weights = _require_torchvision("vgg", "DISTS", allow_random_weights)
        with _random_vgg16_for_dists() if self.random_weights else contextlib.nullcontext(), torch.random.fork_rng():
            torch.manual_seed(0)  # random weights the same in every run, so that runs compare with each other
            self.net = DISTSNetwork().eval().requires_grad_(False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self.net(x, x_hat).flatten()


def _require_torchvision(net: str, metric: str, allow_random_weights: bool) -> bool:
    path, url = torchvision_weights_path(net)
    if path.is_file():
        return False
    if not allow_random_weights:
        raise MissingWeightsError(f"{metric} needs {path.name}, not found at {path}: download {url} into {path.parent}")
    return True


def fid_patches(image: Tensor, size: int = PATCH) -> Tensor:
    """HiFiC's FID/256 patches of one C×H×W image: the non-overlapping size² grid, plus a second
    grid shifted by size/2 in both directions when the image is at least 1.5·size on both sides."""
    patches = []
    for offset in (0, size // 2):
        h, w = image.shape[-2] - offset, image.shape[-1] - offset
        if offset and min(image.shape[-2:]) < size + size // 2:
            break
        for top in range(offset, offset + (h // size) * size, size):
            for left in range(offset, offset + (w // size) * size, size):
                patches.append(image[:, top : top + size, left : left + size])
    return torch.stack(patches) if patches else image.new_zeros(0, image.shape[0], size, size)


def patch_count(height: int, width: int, size: int = PATCH) -> int:
    n = (height // size) * (width // size)
    if min(height, width) >= size + size // 2:
        n += ((height - size // 2) // size) * ((width - size // 2) // size)
    return n


class PatchDistribution:
    """FID or KID between the patches of the originals and of the reconstructions (torchmetrics,
    Inception features; a random feature extractor only with ``allow_random_weights``)."""

    def __init__(self, kind: str, allow_random_weights: bool, device: torch.device):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        try:
            feature: int | nn.Module = 2048
            metric = (FrechetInceptionDistance if kind == "fid256" else KernelInceptionDistance)
            self.metric = metric(feature=feature, normalize=True, **({"subset_size": 50} if kind == "kid256" else {}))
            self.random_weights = False
        except (ModuleNotFoundError, OSError, RuntimeError) as exc:
            if not allow_random_weights:
                raise MissingWeightsError(
                    f"{kind} needs torch-fidelity's FID Inception weights (pt_inception-2015-12-05): "
                    f"`pip install torch-fidelity` and place the weights in the torch hub cache ({exc})"
                ) from None
            self.metric = metric(feature=_RandomFeatures(), normalize=True,
                                 **({"subset_size": 2} if kind == "kid256" else {}))
            self.random_weights = True
        self.metric = self.metric.to(device)
        self.kind, self.count = kind, 0

    def update(self, x_hat: Tensor, x: Tensor) -> None:
        real, fake = fid_patches(x[0]), fid_patches(x_hat[0])
        self.count += real.shape[0]
        if real.shape[0]:
            self.metric.update(real, real=True)
            self.metric.update(fake, real=False)

    def reset(self) -> None:
        self.metric.reset()
        self.count = 0

    def compute(self) -> float:
        value = self.metric.compute()
        return float(value[0] if isinstance(value, tuple) else value)


class _RandomFeatures(nn.Module):
    """A random conv feature extractor standing in for Inception (tests only)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():  # the same random extractor every run, global RNG untouched
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float() / 255.0 if x.dtype == torch.uint8 else x)


class _Plain:
    """A metric without weights, behind the same interface as the network metrics."""

    random_weights = False

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn

    def __call__(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self.fn(x_hat, x)


@dataclass(frozen=True)
class MetricSpec:
    """One per-image metric, as training's validation and evaluate.py both name and use it."""

    name: str  # the project's one spelling: `val/<name>`, evaluate's `metrics=[...]`, the CSV columns
    display: str  # axis labels and tables
    unit: str
    higher_is_better: bool
    compressai_key: str  # the key in CompressAI's results JSON
    build: Callable[[bool], Callable[[Tensor, Tensor], Tensor]]  # allow_random_weights → fn(x_hat, x) per image


def _lpips(net: str):
    return lambda allow_random_weights: LPIPS(net, allow_random_weights)


#: Every per-image metric. Adding one is an entry here (and its implementation above).
PER_IMAGE_METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in [
    MetricSpec("psnr", "PSNR (RGB)", "dB", True, "psnr-rgb", lambda _: _Plain(psnr)),
    MetricSpec("ms_ssim", "MS-SSIM (RGB)", "", True, "ms-ssim-rgb", lambda _: _Plain(ms_ssim)),
    MetricSpec("ms_ssim_y", "MS-SSIM (Y)", "", True, "ms-ssim-y", lambda _: _Plain(ms_ssim_y)),
    MetricSpec("lpips_alex", "LPIPS (AlexNet)", "", False, "lpips-alex", _lpips("alex")),
    MetricSpec("lpips_vgg", "LPIPS (VGG)", "", False, "lpips-vgg", _lpips("vgg")),
    MetricSpec("dists", "DISTS", "", False, "dists", lambda allow: DISTS(allow)),
    MetricSpec("clipiqa", "CLIP-IQA (pyiqa)", "", True, "clipiqa", lambda allow: PyIQAMetric("clipiqa", allow)),
    MetricSpec("musiq", "MUSIQ (pyiqa, KonIQ)", "", True, "musiq", lambda allow: PyIQAMetric("musiq", allow)),
]}
PER_IMAGE = tuple(PER_IMAGE_METRICS)


def metric_spec(name: str) -> MetricSpec:
    if name not in PER_IMAGE_METRICS:
        raise ConfigError("metrics", f"unknown metric {name!r}; choose from {list(PER_IMAGE + DISTRIBUTION)}")
    return PER_IMAGE_METRICS[name]


def compressai_key(name: str) -> str:
    """The key of a metric in CompressAI's results JSON (``psnr`` → ``psnr-rgb``); metrics
    CompressAI does not name (FID/KID) keep ours."""
    return PER_IMAGE_METRICS[name].compressai_key if name in PER_IMAGE_METRICS else name


def higher_is_better(name: str) -> bool:
    return PER_IMAGE_METRICS[name].higher_is_better if name in PER_IMAGE_METRICS else False
