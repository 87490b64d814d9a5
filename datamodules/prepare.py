"""Prepare image folders once into shards for streamed training (``data=shards``, ``data=lsdir_shards``).

    python -m datamodules.prepare data/LSDIR/train -o data/LSDIR/shards [--workers N]

Running the same command again continues an interrupted preparation. Unreadable files are
skipped and converted ones (greyscale, alpha, 16-bit, EXIF rotation) kept, each warned about,
counted and listed in ``OUTPUT/preparation.json``.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
from pathlib import Path

from datamodules.shards import REPORT, default_workers, prepare_shards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="image folders (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="shard folder (copy it to an object store to stream from there)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: this machine's cores)")
    parser.add_argument("--tile", type=int, default=128, help="tile side: a crop decodes only the tiles it touches")
    parser.add_argument("--codec", choices=["png", "raw"], default="png", help="png: about the size of the PNGs; raw: ~3× larger, no decoding")
    parser.add_argument("--compress-level", type=int, default=6, help="PNG zlib level: 1 prepares ~5× faster, ~15%% larger")
    parser.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size (the unit of download and shuffling)")
    parser.add_argument("--images-per-part", type=int, default=64, help="unit of work and of resumption")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle that spreads the photos over the chunks")
    args = parser.parse_args(argv)
    report = prepare_shards(
        args.sources, args.output, tile=args.tile, codec=args.codec, compress_level=args.compress_level,
        chunk_bytes=args.chunk_bytes, images_per_part=args.images_per_part, seed=args.seed, workers=args.workers,
    )
    print(
        f"{report['images']} images in {args.output}: {report['shard_bytes'] / 1e9:.2f} GB, "
        f"{report['shard_bytes'] / report['source_bytes']:.2f}× their source files; "
        f"{len(report['skipped'])} skipped (unreadable), {len(report['converted'])} converted, listed in {args.output / REPORT}"
    )


if __name__ == "__main__":
    main()
