"""The training crop, the folder dataset and the epoch shuffle, over the library's bad-input-safe
image reading (:mod:`osdic.images`): a file that cannot be decoded is skipped; a file that needed
converting is used. Either way it gets exactly one warning over the whole run (across DataLoader
workers) and is counted, so bad data neither kills a run nor goes unnoticed."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import random
import signal
import warnings
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import Tensor
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import Dataset, DistributedSampler

from osdic.images import DEFAULT_MAX_PIXELS, Decoded, IMAGE_EXTENSIONS, UnreadableImage, evaluation_view, list_images, open_rgb, to_tensor


class RandomCrop:
    """A random ``size``² crop, with optional HiFiC-style random down-scaling and a random flip.

    The scale s is drawn in [max(min_scale, size/short_side), 1] (or fixed to 1); an image whose
    short side is under ``size`` is up-scaled to fit (s > 1) rather than dropped. The crop is
    taken as a (size/s)² region of the source resized to size², so a down-scaled crop never
    resizes the whole photo, and a JPEG is decoded at the coarsest DCT scale that still covers it.
    At scale 1 nothing is resampled: the crop is a copy of source pixels at an integer offset.

    ``cache_decoded`` keeps every decoded photo in memory (at full size, so no JPEG draft
    decoding): for sets of a few photos, where decoding a whole photo for each crop would cost
    more than the training step (the demo, benchmarks). Each loader worker holds its own copy.
    """

    def __init__(self, size: int, random_downscale: bool = False, min_scale: float = 0.5, hflip: bool = True,
                 cache_decoded: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.size, self.random_downscale, self.min_scale, self.hflip = size, random_downscale, min_scale, hflip
        self.decoded: dict[Path, Decoded] | None = {} if cache_decoded else None
        self.max_pixels = max_pixels

    def draw_scale(self, width: int, height: int, rng: random.Random) -> float:
        needed = self.size / min(width, height)
        if not self.random_downscale or needed >= 1:
            return max(1.0, needed)
        return rng.uniform(max(self.min_scale, needed), 1.0)

    def place(self, width: int, height: int, scale: float, rng: random.Random) -> tuple[float, float, float]:
        """The source square (left, top, side) that becomes the crop; whole pixels at scale 1."""
        region = min(self.size / scale, width, height)
        if region == self.size:
            return rng.randint(0, width - self.size), rng.randint(0, height - self.size), region
        return rng.uniform(0, width - region), rng.uniform(0, height - region), region

    def context(self, region: float) -> int:
        """Pixels around the square that the bicubic filter reads (none for an exact copy)."""
        return 0 if region == self.size else math.ceil(2 * max(1.0, region / self.size)) + 1

    def render(self, image: Image.Image, left: float, top: float, region: float, rng: random.Random) -> Tensor:
        """The square of ``image`` at ``size``², copied exactly at scale 1, and flipped at random."""
        box = (left, top, left + region, top + region)
        if region == self.size:
            crop = image.crop(box)
        else:
            crop = image.resize((self.size, self.size), Image.BICUBIC, box=box)
        if self.hflip and rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(crop)

    def __call__(self, path: Path, rng: random.Random) -> tuple[Tensor, str | None]:
        if self.decoded is None:
            image, note, scale, full_width = open_rgb(path, lambda w, h: self.draw_scale(w, h, rng), self.max_pixels)
        else:
            if path not in self.decoded:
                self.decoded[path] = open_rgb(path, max_pixels=self.max_pixels)
            image, note, _, full_width = self.decoded[path]
            scale = self.draw_scale(image.size[0], image.size[1], rng)
        decoded_fraction = image.size[0] / full_width  # < 1 when a JPEG draft decoded smaller
        left, top, region = self.place(image.size[0], image.size[1], scale / decoded_fraction, rng)
        return self.render(image, left, top, region, rng), note


class CenterCrop:
    """Deterministic validation view, evaluation's (:func:`osdic.images.evaluation_view`): the
    central ``size``² crop (the whole image if None), after resizing the short side to
    ``resize_short`` if set."""

    def __init__(self, size: int | None, resize_short: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.size, self.resize_short, self.max_pixels = size, resize_short, max_pixels

    def __call__(self, path: Path, rng: random.Random) -> tuple[Tensor, str | None]:
        image, note, _, _ = open_rgb(path, max_pixels=self.max_pixels)
        return to_tensor(evaluation_view(image, self.resize_short, self.size)), note


def _worker_init(worker_id: int, rank: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id, rank)  # Lightning's seeding of the worker, which a custom init replaces


def shielded_worker_init(rank: int):
    """A DataLoader worker init that shields the worker from SIGTERM. A scheduler (scancel, a
    preemption) signals the whole process group: a worker that died of it first would end the run
    with "DataLoader worker killed by signal" before the main process could checkpoint its batch.
    The main process, which handles SIGTERM, shuts its workers down as a run ends; a worker whose
    main process died exits by itself (PyTorch's watchdog)."""
    return functools.partial(_worker_init, rank=rank)


# Per-file status shared by all DataLoader workers (inherited through fork or pickled for spawn).
_UNSEEN, _OK, _CONVERTED, _SKIPPED = 0, 1, 2, 3


class ImageFolder(Dataset):
    """Images under one or more folders. An undecodable file is replaced by the next decodable
    one; every skip or conversion is warned about once and counted (see :meth:`report`)."""

    def __init__(self, roots: Sequence[str | os.PathLike], view, seed: int = 0):
        self.files = list_images(roots)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {list(map(str, roots))}")
        self.view = view
        self.seed = seed
        self._status = multiprocessing.Array("b", len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def _mark(self, index: int, status: int, message: str) -> None:
        with self._status.get_lock():
            first = self._status[index] in (_UNSEEN, _OK) and self._status[index] != status
            self._status[index] = status
        if first:
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def __getitem__(self, key: int | tuple[int, int]) -> Tensor:
        """``key``: an index, or (index, epoch) from :class:`EpochShuffle`, which makes the
        random crop a function of (seed, epoch, index) alone — new every epoch, the same after
        a resume and under any worker count."""
        if isinstance(key, (tuple, list)):
            index, epoch = key
            rng = random.Random(f"{self.seed}-{epoch}-{index}")
        else:
            index, rng = key, random.Random(int(torch.randint(0, 2**62, ())))
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            if self._status[i] == _SKIPPED:
                continue
            try:
                tensor, note = self.view(self.files[i], rng)
            except UnreadableImage as exc:
                self._mark(i, _SKIPPED, f"skipping unreadable image {self.files[i]}: {exc}")
                continue
            if note is not None:
                self._mark(i, _CONVERTED, f"converted {self.files[i]}: {note}")
            elif self._status[i] == _UNSEEN:
                self._status[i] = _OK
            return tensor
        raise RuntimeError(f"none of the {len(self.files)} images could be decoded")

    def report(self) -> dict[str, int]:
        """Counts of files skipped (unreadable) and converted so far, over all workers."""
        status = list(self._status)
        return {"skipped": status.count(_SKIPPED), "converted": status.count(_CONVERTED)}


class EpochShuffle(DistributedSampler):
    """A shuffle that depends on (seed, epoch) only and yields (index, epoch) pairs.

    Under DDP, rank r takes every ``num_replicas``-th index of the permutation (padded to a
    multiple by repeating its start, like torch's DistributedSampler, which it is so that
    Lightning does not wrap it). Lightning calls ``set_epoch`` before every epoch; without it
    each pass is the next epoch. :attr:`epoch` is the epoch of the pass in progress."""

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.size = size
        self.epoch = self._next_epoch = 0
        self._resume = (-1, 0)

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def resume(self, epoch: int, position: int) -> None:
        """The next pass is ``epoch``, after this rank's first ``position`` indices: a run
        resumed mid-epoch draws exactly what the interrupted one would have."""
        self.epoch = self._next_epoch = epoch
        self._resume = (epoch, position)

    def __iter__(self):
        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order = (order * math.ceil(self.total_size / self.size))[: self.total_size]
        mine = order[self.rank :: self.num_replicas]
        start = self._resume[1] if self.epoch == self._resume[0] else 0
        self._resume = (-1, 0)
        return iter([(i, self.epoch) for i in mine[start:]])
