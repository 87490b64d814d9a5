"""No-reference IQA metrics as the literature computes them: pyiqa's (the IQA-PyTorch toolbox the
papers behind this project report CLIPIQA and MUSIQ with), under this project's weight policy.

pyiqa downloads its weights on first use and unpickles some of them (a pickle can run code).
Here every weight file must already be on disk (``python -m training.preflight download``
fetches them), and is read as data:

- ``clipiqa``: pyiqa's CLIP-IQA (CLIP ResNet-50 at the image's own resolution, five antonym
  prompt pairs, the mean probability of the positive prompts). OpenAI's ``RN50.pt`` is a
  TorchScript archive; it is used only once its SHA-256 matches the one OpenAI publishes in its
  URL, so no other file is ever run.
- ``musiq``: pyiqa's MUSIQ trained on KonIQ-10k, its state dict read with
  ``weights_only=True`` (tensors only) into the network pyiqa builds.

Without a file the metric stops naming it and where it comes from; ``allow_random_weights``
(tests only) builds the same networks with random weights, and ``random_weights`` says so.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from osdic.checks import MissingWeightsError
from osdic.utils.modules import ExternalWeights

_CLIP_RN50_SHA256 = "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"


@dataclass(frozen=True)
class WeightFile:
    """A file a metric reads, where it lives under the torch hub folder, and where it comes from."""

    relative_path: str
    url: str
    sha256: str | None = None  # checked before use when given

    @property
    def path(self) -> Path:
        return Path(torch.hub.get_dir()) / self.relative_path

    def problem(self) -> str | None:
        """Why the file cannot be used (None when it can)."""
        if not self.path.is_file():
            return f"not found at {self.path}"
        if self.sha256 is not None:
            digest = hashlib.sha256()
            with self.path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != self.sha256:
                return f"{self.path} is not the published file (SHA-256 differs): delete it and download it again"
        return None


#: the files each pyiqa metric reads
WEIGHT_FILES: dict[str, tuple[WeightFile, ...]] = {
    "clipiqa": (WeightFile("clip/RN50.pt", f"https://openaipublic.azureedge.net/clip/models/{_CLIP_RN50_SHA256}/RN50.pt",
                           _CLIP_RN50_SHA256),),
    "musiq": (WeightFile("pyiqa/musiq_koniq_ckpt-e95806b9.pth",
                         "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/musiq_koniq_ckpt-e95806b9.pth"),),
}


@contextlib.contextmanager
def _random_clip() -> Iterator[None]:
    """pyiqa's CLIP-IQA on a random (narrow) CLIP ResNet instead of OpenAI's weights (tests)."""
    import pyiqa.archs.clipiqa_arch as clipiqa_arch
    from pyiqa.archs.clip_model import CLIP

    def random_clip(*_args, **_kwargs):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return CLIP(embed_dim=64, image_resolution=224, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None,
                        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                        transformer_layers=1).float()

    original, clipiqa_arch.load = clipiqa_arch.load, random_clip
    try:
        yield
    finally:
        clipiqa_arch.load = original


def _clipiqa(random_weights: bool):
    import pyiqa

    with _random_clip() if random_weights else contextlib.nullcontext():
        return pyiqa.create_metric("clipiqa", device="cpu")


def _musiq(random_weights: bool):
    import pyiqa
    from pyiqa.archs.arch_util import clean_state_dict

    from osdic.utils.untrusted import load_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        metric = pyiqa.create_metric("musiq", device="cpu", pretrained=False)
    if not random_weights:
        metric.net.load_state_dict(clean_state_dict(load_checkpoint(WEIGHT_FILES["musiq"][0].path)), strict=True)
    return metric


_BUILDERS: dict[str, Callable[[bool], torch.nn.Module]] = {"clipiqa": _clipiqa, "musiq": _musiq}


class PyIQAMetric(ExternalWeights):
    """One of pyiqa's no-reference metrics, per image (shape (B,)), inputs in [0, 1]."""

    reloadable = True  # a metric: always rebuilt, never stored

    def __init__(self, name: str, allow_random_weights: bool = False):
        super().__init__()
        problems = [f"{file.path.name}: {problem} (download {file.url} into {file.path.parent})"
                    for file in WEIGHT_FILES[name] if (problem := file.problem())]
        self.random_weights = bool(problems)
        if problems and not allow_random_weights:
            raise MissingWeightsError(f"{name} (pyiqa) needs " + "; ".join(problems)
                                      + ". `python -m training.preflight download ...` fetches it; tests may pass "
                                        "allow_random_weights=true instead, and the values are then not " + name)
        self.name = name
        self.metric = _BUILDERS[name](self.random_weights).eval()

    def train(self, mode: bool = True) -> "PyIQAMetric":
        return super().train(False)

    def forward(self, x_hat: Tensor, x: Tensor | None = None) -> Tensor:
        return self.metric(x_hat.float().clamp(0, 1)).flatten()
