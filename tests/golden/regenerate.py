"""Write the golden codec package and file that tests/test_golden.py decodes.

    python tests/golden/regenerate.py

Run it only together with a bump of the bitstream's FORMAT_VERSION or the package's
PACKAGE_FORMAT: files and packages written by earlier releases must keep decoding as they did.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from osdic.codec.image_codec import compress_image
from osdic.codec.package import export_package, load_package
from osdic.codec.bitstream import unpack
from osdic.models.hific import HiFiCCompressor

HERE = Path(__file__).resolve().parent
TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


def golden_image() -> torch.Tensor:
    """A smooth 3×72×100 image (gradients and a ring), the same on every machine."""
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 100), indexing="ij")
    ring = ((rows - 0.5) ** 2 + (cols - 0.4) ** 2).sqrt().mul(12).sin().mul(0.5).add(0.5)
    return torch.stack([rows, cols, ring]).mul(255).round().div(255)


def main() -> None:
    torch.manual_seed(0)
    export_package(HiFiCCompressor(**TINY).eval(), HERE / "hific_tiny")
    codec, fingerprint = load_package(HERE / "hific_tiny")
    data = compress_image(codec, fingerprint, golden_image())
    (HERE / "image.osdc").write_bytes(data)
    image = unpack(data, fingerprint)
    y_hat, z_hat = codec.decode_latents([[s] for s in image.strings], codec.latent_shape(image.height, image.width))
    save_file({"y_hat": y_hat.contiguous(), "z_hat": z_hat.contiguous()}, HERE / "image_latents.safetensors")
    print(f"wrote {HERE}: package, image.osdc ({len(data)} bytes), image_latents.safetensors")


if __name__ == "__main__":
    main()
