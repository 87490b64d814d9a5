"""Entropy-coding speed and the real-vs-estimated bpp gap on Kodak.

    python bench/entropy_coding.py --codec logs/demo/latest/codec [--kodak DIR]

For each image: the real file (header included) against the rate estimated from the
likelihoods, and the time of the entropy coder alone (ŷ, ẑ ⇄ strings; decoding with and
without osdic.codec.entropy_guard's checks and padding) and of the whole
compress / decompress on the CPU; each the median of 3 after a warm-up.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import os
import statistics
from pathlib import Path

import torch

from osdic.codec.bitstream import unpack
from osdic.codec.entropy_guard import guard_entropy_coders
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import load_package
from osdic.images import open_rgb, to_tensor
from osdic.models.entropy import rate_bpp
from osdic.utils.devices import timed

KODAK = Path(os.environ.get("KODAK_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, required=True, help="codec package directory")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    codec, fingerprint = load_package(args.codec)
    guard_entropy_coders(codec)  # as decompress_bytes does
    unguarded, _ = load_package(args.codec)  # compressai's decoder without the guard's checks and padding
    rows = []
    for path in sorted(args.kodak.glob("*.png")):
        x = to_tensor(open_rgb(path).image)[None]
        pixels = x.shape[-2] * x.shape[-1]
        with torch.inference_mode():
            estimated = float(rate_bpp(codec(x)["likelihoods"], pixels))
        data, t_compress = timed(lambda: compress_image(codec, fingerprint, x))
        _, t_decompress = timed(lambda: decompress_bytes(codec, fingerprint, data))
        strings = unpack(data).strings
        shape = codec.latent_shape(*x.shape[-2:])
        _, t_entropy_decode = timed(lambda: codec.decode_latents([[s] for s in strings], shape))
        _, t_unguarded = timed(lambda: unguarded.decode_latents([[s] for s in strings], shape))
        real = len(data) * 8 / pixels
        rows.append((path.name, estimated, real, t_compress, t_decompress, t_entropy_decode, t_unguarded))
        print(f"{path.name}: est {estimated:.4f} bpp, real {real:.4f} bpp ({(real / estimated - 1) * 100:+.2f}%), "
              f"compress {t_compress * 1e3:.0f} ms, decompress {t_decompress * 1e3:.0f} ms, "
              f"entropy decoding {t_entropy_decode * 1e3:.0f} ms ({t_unguarded * 1e3:.0f} ms unguarded)")
    est, real = statistics.mean(r[1] for r in rows), statistics.mean(r[2] for r in rows)
    print(f"\nKodak mean over {len(rows)} images: estimated {est:.4f} bpp, real {real:.4f} bpp "
          f"(gap {(real / est - 1) * 100:+.2f}%, header+checksum included); "
          f"compress {statistics.mean(r[3] for r in rows) * 1e3:.0f} ms, "
          f"decompress {statistics.mean(r[4] for r in rows) * 1e3:.0f} ms, "
          f"entropy decoding {statistics.mean(r[5] for r in rows) * 1e3:.0f} ms "
          f"({statistics.mean(r[6] for r in rows) * 1e3:.0f} ms unguarded) per image "
          f"(CPU, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
