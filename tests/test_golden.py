"""Files and packages of earlier releases keep decoding: a tiny HiFiC package and a file it
wrote, checked in under tests/golden/ (tests/golden/regenerate.py, only with a format bump)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from osdic.codec.bitstream import unpack
from osdic.codec.image_codec import decompress_bytes
from osdic.codec.package import load_package

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_the_golden_file_decodes_to_the_same_latents_and_image_size():
    codec, fingerprint = load_package(GOLDEN / "hific_tiny")
    data = (GOLDEN / "image.osdc").read_bytes()
    image = unpack(data, expected_fingerprint=fingerprint)
    y_hat, z_hat = codec.decode_latents([[s] for s in image.strings], codec.latent_shape(image.height, image.width))
    expected = load_file(GOLDEN / "image_latents.safetensors")
    # symbols are integers; ŷ adds float32 means, computed on the CPU (allow for another CPU's rounding)
    torch.testing.assert_close(z_hat, expected["z_hat"], rtol=0, atol=0)
    torch.testing.assert_close(y_hat, expected["y_hat"], rtol=0, atol=1e-4)
    assert decompress_bytes(codec, fingerprint, data).shape == (1, 3, 72, 100)
