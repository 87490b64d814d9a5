"""Bad-input-safe image loading and the training crop.

Every file is decoded by PIL (JPEG through its draft mode when the crop will be down-scaled
anyway; an RGB PNG by libspng through pyspng when installed, about 2× faster), EXIF-rotated, and
converted to 8-bit RGB. A file that cannot be decoded is skipped; a file that needed converting
(EXIF rotation included) is used. Either way it gets exactly one warning over the whole run
(across DataLoader workers) and is counted, so bad data neither kills a run nor goes unnoticed.
Every name with an image extension counts, so a broken or looping symlink or a FIFO named like an
image is skipped with a warning too, never dropped silently.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
import stat
import warnings
import zlib
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

try:
    import pyspng
except ImportError:  # no wheel for this platform: Pillow decodes PNGs too, only slower
    pyspng = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
# Decoding must fail loudly on a truncated file, never pad it with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# A decompression bomb is a bad input like any other.
Image.MAX_IMAGE_PIXELS = 1 << 28


class UnreadableImage(Exception):
    """The file cannot be decoded into an image."""


def list_images(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Every path under ``roots`` named like an image that is not a directory, sorted per root:
    broken symlinks and FIFOs too, which decoding then skips with a warning."""
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    return files


def _require_regular_file(path: Path) -> None:
    """Raise UnreadableImage, before anything opens it (a FIFO would block), for what is not a
    non-empty regular file."""
    try:
        info = path.stat()
    except OSError as exc:
        if path.is_symlink():
            raise UnreadableImage(f"symlink to {os.readlink(path)} does not resolve ({exc.strerror})") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableImage("not a regular file (a FIFO, socket or device)")
    if info.st_size == 0:
        raise UnreadableImage("empty file (0 bytes)")


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB, and a note saying what was converted (None when it already was)."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(np.round(array * 255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB"), f"{mode} (high bit depth) → 8-bit RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode} → RGB on white"
    return image.convert("RGB"), f"{mode} → RGB"


_EXIF_ORIENTATION = 0x0112


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header without decoding."""
    w, h = image.size
    return (h, w) if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8) else (w, h)


def _png_chunks_intact(data: bytes) -> bool:
    """Every chunk up to IEND is complete and matches its CRC-32."""
    view, position = memoryview(data), 8
    while position + 12 <= len(data):
        length = int.from_bytes(view[position : position + 4], "big")
        end = position + 8 + length
        if end + 4 > len(data) or zlib.crc32(view[position + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            return False
        if view[position + 4 : position + 8] == b"IEND":
            return True
        position = end + 4
    return False


def decode_png(data: bytes) -> np.ndarray:
    """A PNG's pixels as 8-bit RGB, H×W×3. pyspng skips the checksums, so they are checked here
    first: a damaged file fails as it does under Pillow instead of decoding to noise."""
    if pyspng is None:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    if not _png_chunks_intact(data):
        raise UnreadableImage("damaged PNG (truncated, or a chunk fails its CRC)")
    try:
        return pyspng.load(data, format="RGB")
    except RuntimeError as exc:
        raise UnreadableImage(str(exc)) from None


def _png_without_exif(path: Path) -> bytes | None:
    """The file's bytes when it holds no EXIF (in an eXIf chunk or a text chunk), so it is upright
    as stored; None otherwise. A chance match inside the image data only costs the slow path."""
    data = path.read_bytes()
    return data if b"eXIf" not in data and b"exif" not in data else None


def _layout_notes(image: Image.Image) -> list[str]:
    """What the header says will change beyond the pixel format: EXIF rotation, extra frames."""
    notes = []
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"first of {frames} frames")
    return notes


class Decoded(NamedTuple):
    image: Image.Image  # upright 8-bit RGB
    note: str | None  # what was converted, None when nothing was
    scale: float  # the scale chosen by the caller
    full_width: int  # upright width at full resolution (image may be smaller after a draft)


def open_rgb(path: str | os.PathLike, choose_scale=None) -> Decoded:
    """Decode ``path`` as upright 8-bit RGB.

    ``choose_scale(width, height)`` sees the upright full size before decoding and returns the
    scale the caller will resize to; below 1/2 a JPEG is decoded at a reduced size (DCT scaling),
    so the returned image may be smaller than the file's full size. Raises UnreadableImage for
    anything that is not a decodable image."""
    path = Path(path)
    try:
        _require_regular_file(path)
        with Image.open(path) as image:
            notes = _layout_notes(image)
            png = _png_without_exif(path) if image.format == "PNG" and image.mode == "RGB" else None
            full_width, full_height = image.size if png is not None else upright_size(image)
            scale = choose_scale(full_width, full_height) if choose_scale is not None else 1.0
            if png is not None:
                return Decoded(Image.fromarray(decode_png(png)), "; ".join(notes) or None, scale, full_width)
            if scale < 1.0 and image.format == "JPEG":
                w, h = image.size
                image.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
            image.load()
            image = ImageOps.exif_transpose(image)
            image, note = _to_rgb(image)
            image.load()
            notes += [note] if note else []
            return Decoded(image, "; ".join(notes) or None, scale, full_width)
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from None


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB → float 3×H×W in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


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
                 cache_decoded: bool = False):
        self.size, self.random_downscale, self.min_scale, self.hflip = size, random_downscale, min_scale, hflip
        self.decoded: dict[Path, Decoded] | None = {} if cache_decoded else None

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
            image, note, scale, full_width = open_rgb(path, lambda w, h: self.draw_scale(w, h, rng))
        else:
            if path not in self.decoded:
                self.decoded[path] = open_rgb(path)
            image, note, _, full_width = self.decoded[path]
            scale = self.draw_scale(image.size[0], image.size[1], rng)
        decoded_fraction = image.size[0] / full_width  # < 1 when a JPEG draft decoded smaller
        left, top, region = self.place(image.size[0], image.size[1], scale / decoded_fraction, rng)
        return self.render(image, left, top, region, rng), note


class CenterCrop:
    """Deterministic validation view: the central ``size``² crop, or the whole image if None."""

    def __init__(self, size: int | None):
        self.size = size

    def __call__(self, path: Path, rng: random.Random) -> tuple[Tensor, str | None]:
        image, note, _, _ = open_rgb(path)
        if self.size is not None:
            w, h = image.size
            if min(w, h) < self.size:
                scale = self.size / min(w, h)
                image = image.resize((math.ceil(w * scale), math.ceil(h * scale)), Image.BICUBIC)
                w, h = image.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
        return to_tensor(image), note


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
