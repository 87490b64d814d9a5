"""Training-crop throughput of image folders (today's loader) against prepared shards, and the
preparation's own speed and size.

    python bench/data_throughput.py [--source DIR] [--workers 0 2] [--crop 256 512]

Without --source, builds LSDIR-sized (2048×1365) PNGs and JPEGs from the 24 Kodak images. Every
row is crops per second in batches of 8 after start-up (DataLoader workers, first chunk), with
one torch thread in the main process, so ``--workers 0`` is the figure per core. "× today" is the
ratio to the PNG folder decoded by Pillow (no pyspng) in the same run and configuration.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

import osdic.images as images
from datamodules.images import ImageFolder, RandomCrop
from datamodules.shards import CropStream, ResumableStreamingDataLoader, prepare_shards

KODAK = Path(os.environ.get("KODAK_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))
BATCH = 8
TODAY = "png folder, Pillow"


def make_large_photos(folder: Path, fmt: str, count: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(KODAK.glob("*.png"))[:count]:
        image = Image.open(path).convert("RGB")
        image = image.resize((image.width * 8 // 3, image.height * 8 // 3), Image.BICUBIC)  # 2048×1365
        image.save(folder / f"{path.stem}.{fmt}", quality=95) if fmt == "jpg" else image.save(folder / f"{path.stem}.{fmt}")
    return folder


def crops_per_second(loader, crops: int) -> float:
    """Epochs until ``crops`` crops are counted; each epoch's first batch (start-up) is not."""
    if len(loader) < 2:
        raise ValueError(f"an epoch of {len(loader)} batch: give a folder of at least {2 * BATCH} photos")
    seen, elapsed = 0, 0.0
    while seen < crops:
        iterator = iter(loader)
        next(iterator)
        start = time.perf_counter()
        for batch in iterator:
            seen += batch.shape[0]
        elapsed += time.perf_counter() - start
    return seen / elapsed


def folder_loader(folder: Path, crop: RandomCrop, workers: int) -> DataLoader:
    return DataLoader(ImageFolder([folder], crop), batch_size=BATCH, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0)


def shard_loader(shards: Path, crop: RandomCrop, workers: int) -> ResumableStreamingDataLoader:
    return ResumableStreamingDataLoader(CropStream(str(shards), crop, seed=0), batch_size=BATCH, num_workers=workers)


def measure_loaders(loaders: dict, crop_sizes: list[int], worker_counts: list[int], crops: int,
                    min_scale: float) -> None:
    print(f"\n{'loader':<20} {'crop':>5} {'workers':>7} {'downscale':>9} {'crops/s':>8} {'× today':>8}")
    for size in crop_sizes:
        for workers in worker_counts:
            for downscale in (False, True):
                crop = RandomCrop(size, random_downscale=downscale, min_scale=min_scale)
                rates = {}
                for name, (make, source, decoder) in loaders.items():
                    images.pyspng = decoder
                    rates[name] = crops_per_second(make(source, crop, workers), crops)
                    ratio = f"{rates[name] / rates[TODAY]:8.1f}" if TODAY in rates else ""
                    print(f"{name:<20} {size:>5} {workers:>7} {str(downscale):>9} {rates[name]:8.1f} {ratio}", flush=True)


def measure_preparation(folder: Path, root: Path) -> dict[str, Path]:
    print(f"\n{'shards':<20} {'images/s per core':>17} {'size vs PNGs':>12}")
    prepared = {}
    for name, codec, level in [("png, zlib 6", "png", 6), ("png, zlib 1", "png", 1), ("raw", "raw", 6)]:
        output = root / f"shards-{codec}-{level}"
        start = time.perf_counter()
        report = prepare_shards([folder], output, codec=codec, compress_level=level, workers=1)
        rate = report["images"] / (time.perf_counter() - start)
        print(f"{name:<20} {rate:17.2f} {report['shard_bytes'] / report['source_bytes']:11.2f}×", flush=True)
        prepared.setdefault(codec, output)
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a folder of large PNG photos (default: up-scaled Kodak)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--crop", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--crops", type=int, default=96, help="crops timed per row")
    parser.add_argument("--min-scale", type=float, default=0.5,
                        help="random down-scale's floor (conf/data/folder.yaml: min_downscale)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fast_decoder = images.pyspng
    warnings.simplefilter("ignore", RuntimeWarning)  # a given folder's bad files are not the subject here
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        png = args.source or make_large_photos(tmp / "png", "png")
        print(f"cores: {os.cpu_count()}, pyspng: {'yes' if fast_decoder else 'no'}, source: {png}")
        shards = measure_preparation(png, tmp)
        loaders = {TODAY: (folder_loader, png, None), "png folder, pyspng": (folder_loader, png, fast_decoder)}
        if args.source is None:
            loaders["jpg folder"] = (folder_loader, make_large_photos(tmp / "jpg", "jpg"), None)
        loaders |= {f"shards {codec}": (shard_loader, path, fast_decoder) for codec, path in shards.items()}
        measure_loaders(loaders, args.crop, args.workers, args.crops, args.min_scale)


if __name__ == "__main__":
    main()
