"""Data-loader throughput (training crops per second) on large photos.

    python bench/data_throughput.py [--source DIR] [--workers 0 2] [--crop 256 512]

Without --source, builds LSDIR-sized (about 2K) JPEGs and PNGs from the Kodak images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader

from datamodules.images import ImageFolder, RandomCrop

KODAK = Path(os.environ.get("KODAK_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))


def make_large_photos(folder: Path, fmt: str, count: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(KODAK.glob("*.png"))[:count]:
        image = Image.open(path).convert("RGB")
        image = image.resize((image.width * 8 // 3, image.height * 8 // 3), Image.BICUBIC)  # 2048×1365
        image.save(folder / f"{path.stem}.{fmt}", quality=95) if fmt == "jpg" else image.save(folder / f"{path.stem}.{fmt}")
    return folder


def crops_per_second(folder: Path, crop: int, workers: int, downscale: bool, batches: int = 12) -> float:
    dataset = ImageFolder([folder], RandomCrop(crop, random_downscale=downscale, min_scale=0.25))
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += next(iterator).shape[0]
        except StopIteration:
            iterator = iter(loader)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a folder of large photos (default: upscaled Kodak)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--crop", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"given": args.source} if args.source else {
            fmt: make_large_photos(Path(tmp) / fmt, fmt) for fmt in ("jpg", "png")
        }
        print(f"{'source':>6} {'crop':>5} {'workers':>7} {'downscale':>9} {'crops/s':>8}  (cores: {os.cpu_count()})")
        for name, folder in sources.items():
            for crop in args.crop:
                for workers in args.workers:
                    for downscale in (False, True):
                        rate = crops_per_second(folder, crop, workers, downscale)
                        print(f"{name:>6} {crop:>5} {workers:>7} {str(downscale):>9} {rate:8.1f}")


if __name__ == "__main__":
    main()
