"""``compress`` / ``decompress`` command-line entry points (installed by pyproject).

    compress   --codec PACKAGE_DIR photo.png  -o photo.osdc
    decompress --codec PACKAGE_DIR photo.osdc -o photo_decoded.png
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from osdic.codec.bitstream import DEFAULT_MAX_PIXELS, BitstreamError, unpack
from osdic.codec.image_codec import bits_per_pixel, compress_image, decompress_bytes
from osdic.checks import MissingWeightsError
from osdic.codec.package import PackageError, load_package
from osdic.images import UnreadableImage, open_rgb, to_tensor
from osdic.utils.devices import resolve_device
from osdic.utils.untrusted import UntrustedFileError


def save_png(image: torch.Tensor, path: str | Path) -> None:
    array = image.squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def _parser(description: str, output_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help=output_help)
    parser.add_argument("--codec", type=Path, required=True, help="exported codec package directory")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parser


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def _load_package(program: str, args: argparse.Namespace):
    """(codec, fingerprint), or None after saying in one line why the package cannot be used."""
    try:
        return load_package(args.codec, resolve_device(args.device))
    except (PackageError, UntrustedFileError, MissingWeightsError) as exc:
        print(f"{program}: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return None


def compress_main(argv: list[str] | None = None) -> int:
    args = _parser("Compress an image to a file.", "compressed file to write").parse_args(argv)
    package = _load_package("compress", args)
    if package is None:
        return 2
    codec, fingerprint = package
    try:
        image = to_tensor(open_rgb(args.input).image)
    except UnreadableImage as exc:
        print(f"compress: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        data = compress_image(codec, fingerprint, image)
    except Exception as exc:  # noqa: BLE001 — a package loaded as valid may still fail on an image: one line
        print(f"compress: {args.input}: the codec failed: {_one_line(exc)}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    args.output.write_bytes(data)
    h, w = image.shape[-2:]
    print(f"{args.input} ({w}×{h}) → {args.output}: {len(data)} bytes, "
          f"{bits_per_pixel(data, h, w):.4f} bpp, {elapsed * 1000:.0f} ms")
    return 0


def decompress_main(argv: list[str] | None = None) -> int:
    parser = _parser("Decompress a file to a PNG.", "PNG to write")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"refuse files declaring more pixels than this (default {DEFAULT_MAX_PIXELS}, 4096²)",
    )
    args = parser.parse_args(argv)
    package = _load_package("decompress", args)
    if package is None:
        return 2
    codec, fingerprint = package
    data = args.input.read_bytes()
    start = time.perf_counter()
    try:
        image = decompress_bytes(codec, fingerprint, data, args.max_pixels)
    except BitstreamError as exc:
        print(f"decompress: {args.input}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — a package loaded as valid may still fail on a file: one line
        print(f"decompress: {args.input}: the codec failed: {_one_line(exc)}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    save_png(image, args.output)
    header = unpack(data, max_pixels=args.max_pixels)
    print(f"{args.input} → {args.output} ({header.width}×{header.height}), {elapsed * 1000:.0f} ms")
    return 0
