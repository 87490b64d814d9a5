"""The contract every codec of this library implements (CompressAI's ``CompressionModel`` is the
model): what training stages, the file format, evaluation and the latency table may ask of a
codec, so none of them reaches inside one or asks which class it is.

    forward(x)                    → CodecOutput: x_hat, likelihoods (+ likelihoods_rounded, the codec's own latents)
    compress(x)                   → Compressed: strings (one list per string), shape (the hyper-latent's)
    decompress(strings, shape, image_size=None, step=no_hook) → Decompressed: x_hat (+ x_hat_f)
    update(force)                 the entropy coder's tables for the current weights (before real coding)
    num_strings                   strings per image in a file
    latent_shape(h, w)            the hyper-latent's shape for an h×w image (what a file records)
    aux_loss(), aux_parameters()  compressai's quantile loss and the parameters it trains
    parameter_groups()            the codec's parts by name, what a training stage chooses to train
    main_parameters()             every trainable parameter of those parts
    discriminator_context(n)      the cross-attention context a discriminator on the codec's UNet shares
    paper_timed_parts(figures)    the decode time the codec's paper reports, from the measured steps

The outputs are compressai's dicts with their keys declared (``TypedDict``s): code written for
compressai's models reads them unchanged, and a type checker catches a key a codec does not give.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import NotRequired, Sequence, TypedDict

from torch import Tensor, nn


class CodecOutput(TypedDict):
    """What ``forward`` gives a training stage."""

    x_hat: Tensor                                  # the reconstruction, images in [0, 1]
    likelihoods: dict[str, Tensor]                 # per latent, for the rate term (noise in training)
    likelihoods_rounded: NotRequired[dict[str, Tensor]]  # the same latents rounded: the rate a file pays


class Compressed(TypedDict):
    strings: list[list[bytes]]  # one list per string, one entry per image
    shape: tuple[int, int]      # the hyper-latent's (what a file records)


class Decompressed(TypedDict):
    x_hat: Tensor                 # images in [0, 1], cropped to image_size
    x_hat_f: NotRequired[Tensor]  # SODEC's fidelity image D_a(ŷ)


class ImageCodec(nn.Module, metaclass=ABCMeta):
    @abstractmethod
    def forward(self, x: Tensor) -> CodecOutput:
        """Training and validation: x in [0, 1] → reconstruction and likelihoods."""

    @property
    @abstractmethod
    def num_strings(self) -> int:
        """Strings per image in a file."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """The hyper-latent's shape for a ``height``×``width`` image."""

    @abstractmethod
    def compress(self, x: Tensor) -> Compressed:
        """x in [0, 1] → the strings of a file and the hyper-latent's shape."""

    @abstractmethod
    def decompress(self, strings: list, shape: Sequence[int], image_size: Sequence[int] | None = None,
                   step=None) -> Decompressed:
        """The strings of a file → images; ``step(name)`` wraps each decoding step (latency)."""

    @abstractmethod
    def update(self, force: bool = False) -> bool:
        """Rebuild the entropy coder's tables from the current weights."""

    @abstractmethod
    def aux_loss(self) -> Tensor:
        """compressai's loss on the entropy bottleneck's quantiles."""

    @abstractmethod
    def aux_parameters(self) -> list[nn.Parameter]:
        """What the aux loss trains (the quantiles)."""

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The codec's parts by name (quantiles excluded: the aux loss trains them)."""

    def main_parameters(self) -> list[nn.Parameter]:
        """What the main optimizer may train: every trainable parameter of the parts."""
        return [p for group in self.parameter_groups().values() for p in group if p.requires_grad]

    def discriminator_context(self, batch_size: int) -> Tensor | None:
        """The cross-attention context a discriminator built on this codec's UNet reads (None: the
        codec has no fixed one)."""
        return None

    def paper_timed_parts(self, figures: dict[str, float]) -> dict[str, float]:
        """From measured decode steps (seconds by name, with ``total``), the rows the codec's paper
        times under its own name (nothing by default)."""
        return {}


def without_quantiles(module: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in module.named_parameters() if not name.endswith("quantiles")]
