"""Whole-image coding: a tensor ⇄ the bytes of one compressed file."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from osdic.codec.bitstream import DEFAULT_MAX_PIXELS, BitstreamError, CompressedImage, pack, unpack
from osdic.codec.entropy_guard import guard_entropy_coders


def compress_image(codec: nn.Module, fingerprint: bytes, image: Tensor) -> bytes:
    """``image``: 3×H×W or 1×3×H×W in [0, 1] → the bytes of a compressed file."""
    x = image.unsqueeze(0) if image.dim() == 3 else image
    if x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one RGB image, got a tensor of shape {tuple(image.shape)}")
    device = next(codec.parameters()).device
    guard_entropy_coders(codec)
    coded = codec.compress(x.to(device))
    strings = tuple(s[0] for s in coded["strings"])
    return pack(CompressedImage(x.shape[-2], x.shape[-1], fingerprint, strings))


def decompress_outputs(
    codec: nn.Module, fingerprint: bytes, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, Tensor]:
    """The bytes of a compressed file → the codec's decoded images (``x_hat``, and SODEC's
    preliminary ``x_hat_f``), 1×3×H×W in [0, 1]. Raises BitstreamError, at once for a file
    declaring more than ``max_pixels`` pixels. Any file, however hostile, decodes the same on
    every call, within the time and memory its declared size needs."""
    image = unpack(data, expected_fingerprint=fingerprint, max_pixels=max_pixels)
    if len(image.strings) != codec.num_strings:
        raise BitstreamError(f"file holds {len(image.strings)} strings, this codec needs {codec.num_strings}")
    shape = codec.latent_shape(image.height, image.width)
    guard_entropy_coders(codec)
    with torch.inference_mode():
        outputs = codec.decompress([[s] for s in image.strings], shape, (image.height, image.width))
    if not all(torch.isfinite(image).all() for image in outputs.values()):
        raise BitstreamError("decoding gave values that are not finite: the codec package is broken or hostile")
    return outputs


def decompress_bytes(
    codec: nn.Module, fingerprint: bytes, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Tensor:
    """The bytes of a compressed file → the 1×3×H×W reconstruction in [0, 1]."""
    return decompress_outputs(codec, fingerprint, data, max_pixels)["x_hat"]


def bits_per_pixel(data: bytes, height: int, width: int) -> float:
    """Whole file (header included) over the original pixels."""
    return len(data) * 8 / (height * width)
