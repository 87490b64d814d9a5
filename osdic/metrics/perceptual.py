"""LPIPS with an honest weight policy.

LPIPS needs an ImageNet backbone (AlexNet or VGG16 from torchvision) on disk. When the file is
missing we stop with a message naming it and where it goes; only an explicit
``allow_random_weights=True`` (tests) builds the backbone with random weights, and that
instance says so in ``random_weights`` so no number it produces can pass for the real metric.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import torch
import torchvision
from torch import Tensor

from osdic.utils.modules import ExternalWeights
from osdic.checks import MissingWeightsError

_BACKBONE_WEIGHTS = {
    "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
}


def torchvision_weights_path(net: str) -> tuple[Path, str]:
    """Where torchvision looks for the backbone's weights, and where they come from."""
    url = _BACKBONE_WEIGHTS[net].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


class LPIPS(ExternalWeights):
    """Frozen LPIPS distance per image (the ``lpips`` package), inputs in [0, 1]."""

    reloadable = True  # a loss/metric: always rebuilt, never stored

    def __init__(self, net: str = "alex", allow_random_weights: bool = False):
        super().__init__()
        if net not in _BACKBONE_WEIGHTS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_BACKBONE_WEIGHTS)}, got {net!r}")
        path, url = torchvision_weights_path(net)
        self.random_weights = not path.is_file()
        if self.random_weights and not allow_random_weights:
            raise MissingWeightsError(
                f"LPIPS-{net} needs the torchvision backbone weights {path.name}, not found at {path}. "
                f"Download {url} into {path.parent} (or set TORCH_HOME to a directory holding "
                f"hub/checkpoints/{path.name}). Tests may pass allow_random_weights=true instead; "
                f"the values are then not LPIPS."
            )
        if self.random_weights:
            warnings.warn(f"LPIPS-{net} runs on a RANDOM backbone (allow_random_weights): values are not LPIPS")
        self.net_name = net
        # lpips ships its calibrated linear heads; pnet_rand avoids any download of the backbone. Random
        # weights are the same every time (seeded, the global RNG untouched), so runs compare with each other.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=self.random_weights, verbose=False)
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always eval (dropout off)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """Per-image distances, shape (B,)."""
        return self.model(x_hat.float(), x.float(), normalize=True).flatten()
