"""Training data at cluster scale: image folders prepared once into litdata shards of tiled
images, then streamed (from a local folder or an object store) as random crops.

Preparation (:func:`prepare_shards`, ``python -m datamodules.prepare``) decodes every image once
through the image-folder loader's bad-input-safe path, stores it losslessly as tiles
(:mod:`datamodules.tiles`) and writes litdata chunks. Work is split into parts of a fixed list of
images (a seeded shuffle of the sorted file list, so a chunk holds unrelated photos); each part is
written by one process under its own chunk names and recorded when finished, so an interrupted
preparation redoes only unfinished parts and any worker count writes the same shards.

Training (:class:`ShardsDataModule`) streams them with litdata: every rank and DataLoader worker
reads a disjoint set of chunks, in an order set by (seed, epoch); each crop is drawn by
:class:`~datamodules.images.RandomCrop` from (seed, epoch, sample index), decoding only the tiles
it covers; the loader's position is saved in Lightning checkpoints, so a run resumed mid-epoch
continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from litdata import StreamingDataLoader, StreamingDataset
from litdata.processing.complete import complete_dataset, is_complete_dataset
from litdata.streaming.writer import BinaryWriter
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from datamodules.image_folder import ImageFolderDataModule
from datamodules.images import RandomCrop, shielded_worker_init
from osdic.images import UnreadableImage, list_images, open_rgb
from datamodules.tiles import CODECS, TiledImage, encode_tiles
from osdic.checks import ConfigError, require_positive
from osdic.utils.files import write_atomically

#: the final report of a preparation, beside litdata's index.json
REPORT = "preparation.json"
_PARTS = ".parts"  # settings and per-part records while a preparation is unfinished


# --------------------------------------------------------------------------- reading


def random_crop(crop: RandomCrop, image: TiledImage, rng: random.Random) -> Tensor:
    """``crop``'s draw on a tiled image, decoding only the tiles under the square and the pixels
    its filter reads around it: the same crop as from the decoded file."""
    scale = crop.draw_scale(image.width, image.height, rng)
    left, top, region = crop.place(image.width, image.height, scale, rng)
    margin = crop.context(region)
    x0, y0 = max(0, math.floor(left) - margin), max(0, math.floor(top) - margin)
    x1 = min(image.width, math.ceil(left + region) + margin)
    y1 = min(image.height, math.ceil(top + region) + margin)
    pixels = Image.fromarray(image.region(x0, y0, x1, y1))
    return crop.render(pixels, left - x0, top - y0, region, rng)


class CropStream(StreamingDataset):
    """Random crops of the images in prepared shards; each crop is a function of (seed, epoch,
    sample index) alone, so it is the same after a resume and under any worker count."""

    def __init__(self, location: str, crop: RandomCrop, seed: int, cache_dir: str | None = None,
                 max_cache_size: str | None = None):
        super().__init__(location, cache_dir=cache_dir, max_cache_size=max_cache_size, shuffle=True,
                         drop_last=True, seed=seed)
        self.crop = crop

    def __getitem__(self, index) -> Tensor:
        record = super().__getitem__(index)
        position = getattr(index, "index", index)  # a ChunkedIndex while streaming
        rng = random.Random(f"{self.seed}-{self.current_epoch}-{position}")
        return random_crop(self.crop, TiledImage(record), rng)


class ResumableStreamingDataLoader(StreamingDataLoader):
    """litdata's loader, leaving replay mode once a resumed epoch has handed out its last batch.

    Lightning stops drawing at ``len(loader)``, so the epoch's generator never runs to its end,
    where litdata leaves replay mode: without this, every later epoch would replay the resumed
    epoch's tail."""

    _resumed_batches = 0

    def load_state_dict(self, obj: dict) -> None:
        super().load_state_dict(obj)
        self._resumed_batches = obj["num_samples_yielded"] // self.batch_size if self.restore else 0

    def __iter__(self):
        batches_left = len(self) - self._resumed_batches
        self._resumed_batches = 0
        for count, batch in enumerate(super().__iter__(), 1):
            if count == batches_left:
                self.restore = False
            yield batch


def _shards_location(key: str, location: str) -> str:
    if re.match(r"^[a-z0-9]+://", location):
        return location  # an object store: reachable only from where the run has its credentials
    if not is_complete_dataset(location):
        raise ConfigError(key, f"no prepared shards at {location} (no index.json): run `python -m datamodules.prepare`")
    return str(Path(location).resolve())


class ShardsDataModule(ImageFolderDataModule):
    """Training crops streamed from prepared shards; validation and test on image folders, as
    :class:`~datamodules.image_folder.ImageFolderDataModule` (whose options all apply)."""

    def __init__(self, train_shards: str, cache_dir: str | None = None, max_cache_size: str | None = None,
                 train_dirs: None = None, **kwargs):
        if train_dirs is not None:
            raise ConfigError("train_dirs", "training reads train_shards here; leave train_dirs null")
        location = _shards_location("train_shards", train_shards)
        super().__init__(**kwargs)
        self.train_shards = location
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.train_stream: CropStream | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        # Built here, not in __init__: the distributed group must exist so that each rank gets its share.
        if stage in (None, "fit") and self.train_stream is None:
            self.train_stream = CropStream(self.train_shards, self.train_view, self.seed, self.cache_dir,
                                           self.max_cache_size)

    def train_dataloader(self) -> ResumableStreamingDataLoader:
        return ResumableStreamingDataLoader(self.train_stream, batch_size=self.batch_size, num_workers=self.num_workers,
                                            pin_memory=self.pins_memory,
                                            worker_init_fn=shielded_worker_init(self.trainer.global_rank if self.trainer
                                                                                else 0))


# --------------------------------------------------------------------------- preparation


class _PartWriter(BinaryWriter):
    """litdata's chunk writer with files named after the part (``chunk-{part}-{i}.bin``,
    ``{part}.index.json``), so parts written by any process merge into one dataset in part order."""

    def __init__(self, part: int, output: str, chunk_bytes: int | str):
        super().__init__(output, chunk_bytes=chunk_bytes)
        self.part = part

    @property
    def rank(self) -> int:
        return self.part


def _prepare_part(task: tuple[int, list[str], dict, str]) -> dict:
    """Decode, tile and write one part's images; record the part as finished; return the record."""
    part, files, settings, output = task
    writer = _PartWriter(part, output, settings["chunk_bytes"])
    record = {"part": part, "images": 0, "source_bytes": 0, "skipped": [], "converted": []}
    for file in files:
        try:
            decoded = open_rgb(file)
        except UnreadableImage as exc:
            record["skipped"].append([file, str(exc)])
            continue
        if decoded.note is not None:
            record["converted"].append([file, decoded.note])
        pixels = np.asarray(decoded.image)
        writer.add_item(record["images"], encode_tiles(pixels, settings["tile"], settings["codec"], settings["compress_level"]))
        record["images"] += 1
        record["source_bytes"] += os.path.getsize(file)
    writer.done()
    _write_json(Path(output) / _PARTS / f"{part}.json", record)
    return record


def _write_json(path: Path, content: dict) -> None:
    write_atomically(path, json.dumps(content, indent=1).encode())  # a part's record marks it finished


def _remove_partial_part(output: Path, part: int) -> None:
    for leftover in [*output.glob(f"chunk-{part}-*.bin"), output / f"{part}.index.json"]:
        leftover.unlink(missing_ok=True)


def _start_or_continue(parts_dir: Path, settings: dict) -> None:
    """Record the settings of a new preparation, or check that they are those of the unfinished one."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    settings_file = parts_dir / "settings.json"
    if not settings_file.exists():
        _write_json(settings_file, settings)
        return
    started = json.loads(settings_file.read_text())
    if started != settings:
        changed = ", ".join(sorted(k for k in settings if started.get(k) != settings[k]))
        raise ValueError(f"{parts_dir.parent} holds an unfinished preparation with other settings or files ({changed}): "
                         "continue it with the same ones, or use a new output folder")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare_shards(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    tile: int = 128,
    codec: str = "png",
    compress_level: int = 6,
    chunk_bytes: str = "64MB",
    images_per_part: int = 64,
    seed: int = 0,
    workers: int | None = None,
) -> dict:
    """Write the images under ``sources`` as shards in ``output``; return the report (also in
    ``output/preparation.json``): counts, bytes in and out, and every skipped or converted file.

    Running it again with the same arguments continues an interrupted preparation, or only
    returns the report of a finished one."""
    output = Path(output)
    if is_complete_dataset(str(output)):
        return json.loads((output / REPORT).read_text())
    if codec not in CODECS:
        raise ConfigError("codec", f"one of {', '.join(CODECS)}, got {codec!r}")
    if not 0 <= compress_level <= 9:
        raise ConfigError("compress_level", f"a zlib level in 0..9, got {compress_level}")
    require_positive("tile", tile)
    require_positive("images_per_part", images_per_part)
    files = [str(f) for f in list_images(sources)]
    if not files:
        raise FileNotFoundError(f"no images under {[str(s) for s in sources]}")
    settings = {
        "sources": [str(s) for s in sources],
        "files": len(files),
        "files_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest(),
        "tile": tile,
        "codec": codec,
        "compress_level": compress_level,
        "chunk_bytes": chunk_bytes,
        "images_per_part": images_per_part,
        "seed": seed,
    }
    parts_dir = output / _PARTS
    _start_or_continue(parts_dir, settings)
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    parts = [[files[i] for i in order[start : start + images_per_part]] for start in range(0, len(files), images_per_part)]
    records = {p: json.loads((parts_dir / f"{p}.json").read_text()) for p in range(len(parts)) if (parts_dir / f"{p}.json").exists()}
    tasks = [(p, parts[p], settings, str(output)) for p in range(len(parts)) if p not in records]
    for part, *_ in tasks:
        _remove_partial_part(output, part)

    workers = min(workers or default_workers(), max(1, len(tasks)))
    done = sum(len(parts[p]) for p in records)
    with tqdm(total=len(files), initial=done, unit="img", desc=f"preparing {output.name}", smoothing=0.05) as bar:
        def finished(record: dict) -> None:
            for file, reason in record["skipped"]:
                warnings.warn(f"skipping unreadable image {file}: {reason}", RuntimeWarning)
            for file, note in record["converted"]:
                warnings.warn(f"converted {file}: {note}", RuntimeWarning)
            records[record["part"]] = record
            bar.update(len(parts[record["part"]]))

        if workers == 1:
            for task in tasks:
                finished(_prepare_part(task))
        else:
            # spawn: the workers must not inherit the caller's threads (torch's, a progress bar's)
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for record in pool.imap_unordered(_prepare_part, tasks):
                    finished(record)

    report = {
        **settings,
        "images": sum(r["images"] for r in records.values()),
        "source_bytes": sum(r["source_bytes"] for r in records.values()),
        "shard_bytes": sum(f.stat().st_size for f in output.glob("chunk-*.bin")),
        "skipped": [entry for p in sorted(records) for entry in records[p]["skipped"]],
        "converted": [entry for p in sorted(records) for entry in records[p]["converted"]],
    }
    if report["images"] == 0:
        raise FileNotFoundError(f"none of the {len(files)} files under {settings['sources']} could be decoded")
    _write_json(output / REPORT, report)
    complete_dataset(str(output))  # litdata's index.json: from here on the shards are readable
    shutil.rmtree(parts_dir)
    return report
