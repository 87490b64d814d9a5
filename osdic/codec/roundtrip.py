"""Compress one image to a real file with a codec package, decode it back, and report.

    python -m osdic.codec.roundtrip --codec RUN/codec --image photo.png --out-dir RUN/roundtrip
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure, peak_signal_noise_ratio

from osdic.codec.cli import save_png
from osdic.codec.image_codec import bits_per_pixel, compress_image, decompress_bytes
from osdic.codec.package import load_package
from osdic.images import open_rgb, to_tensor
from osdic.metrics.quality import quantize_8bit
from osdic.models.entropy import rate_bpp


def roundtrip(package: Path, image_path: Path, out_dir: Path) -> dict[str, float]:
    codec, fingerprint = load_package(package)
    x = to_tensor(open_rgb(image_path).image).unsqueeze(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = out_dir / (image_path.stem + ".osdc")
    stream.write_bytes(compress_image(codec, fingerprint, x))
    x_hat = decompress_bytes(codec, fingerprint, stream.read_bytes())
    save_png(x_hat, out_dir / (image_path.stem + "_decoded.png"))
    with torch.inference_mode():
        estimated = rate_bpp(codec(x)["likelihoods"], x.shape[-2] * x.shape[-1])
    x_hat = quantize_8bit(x_hat)
    return {
        "bpp_estimated": float(estimated),
        "bpp_real": bits_per_pixel(stream.read_bytes(), x.shape[-2], x.shape[-1]),
        "psnr": float(peak_signal_noise_ratio(x_hat, x, data_range=1.0)),
        "ms_ssim": float(multiscale_structural_similarity_index_measure(x_hat, x, data_range=1.0)),
        "file": str(stream),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    report = roundtrip(args.codec, args.image, args.out_dir)
    print(f"{args.image.name}: estimated {report['bpp_estimated']:.4f} bpp, real file {report['bpp_real']:.4f} bpp "
          f"(whole file over original pixels), PSNR {report['psnr']:.2f} dB, MS-SSIM {report['ms_ssim']:.4f}")
    print(f"compressed file: {report['file']}; decoded PNG beside it")


if __name__ == "__main__":
    main()
