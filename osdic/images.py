"""Bad-input-safe image reading, for training, evaluation and the command-line codec alike, and
the one view validation and evaluation take of an image (:func:`evaluation_view`).

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
import os
import stat
import warnings
import zlib
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch import Tensor

from osdic.checks import ConfigError

try:
    import pyspng
except ImportError:  # no wheel for this platform: Pillow decodes PNGs too, only slower
    pyspng = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
# Decoding must fail loudly on a truncated file, never pad it with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
#: the most pixels (width × height of the header, an animation's canvas) an input image may have:
#: 8192², generous for 8K photos (7680 × 4320); a larger one is skipped, with the reason, before
#: anything is decoded (a 1.5 MB PNG can declare 23000² pixels, 6 GB decoded)
DEFAULT_MAX_PIXELS = 8192 * 8192
# PIL's own bomb check warns below our budget and raises above twice it: the budget is ours alone
Image.MAX_IMAGE_PIXELS = None


class UnreadableImage(Exception):
    """The file cannot be decoded into an image."""


def list_images(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Every path under ``roots`` named like an image that is not a directory, sorted per root:
    broken symlinks and FIFOs too, which decoding then skips with a warning. Symlinked folders
    are followed; one that leads back to a folder already walked (a loop) is walked once, with a
    warning."""
    files: list[Path] = []
    for root in roots:
        found, seen = [], set()
        for folder, subfolders, names in os.walk(root, followlinks=True):
            identity = (os.stat(folder).st_dev, os.stat(folder).st_ino)
            if identity in seen:
                warnings.warn(f"{folder} leads back to a folder already listed (a symlink loop): not walked again",
                              RuntimeWarning, stacklevel=2)
                subfolders.clear()
                continue
            seen.add(identity)
            found += [Path(folder, name) for name in names if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
            found += [Path(folder, name) for name in subfolders if Path(name).suffix.lower() in IMAGE_EXTENSIONS
                      and not Path(folder, name).is_dir()]  # a broken symlink named like an image
        files += sorted(found)
    return files


def existing_folders(key: str, folders: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    """``folders`` (one, a list, or None for none) as strings, each an existing directory; a
    ConfigError naming ``key`` otherwise."""
    if folders is None:
        return []
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    for folder in folders:
        if not Path(folder).is_dir():
            raise ConfigError(key, f"dataset directory {folder} does not exist (set paths.data_dir or the folder)")
    return [str(f) for f in folders]


def evaluation_view(image: Image.Image, resize_short: int | None = None, crop_size: int | None = None) -> Image.Image:
    """An image as validation and evaluation see it: resized (bicubic) so that its short side is
    ``resize_short``, then its central ``crop_size``² (an image whose short side is under that
    is first up-scaled to fit, never padded); None skips a step."""
    if resize_short is not None:
        scale = resize_short / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    if crop_size is not None:
        if min(image.size) < crop_size:
            scale = crop_size / min(image.size)
            image = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)), Image.BICUBIC)
        left, top = (image.width - crop_size) // 2, (image.height - crop_size) // 2
        image = image.crop((left, top, left + crop_size, top + crop_size))
    return image


def fit_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The central ``height``×``width`` of ``image`` scaled (bicubic) to just cover it: a latency
    benchmark's input at the resolution a paper timed (SODEC 512², OSDiff 512×768)."""
    scale = max(height / image.height, width / image.width)
    image = image.resize((max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


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


def _layout_notes(image: Image.Image, has_exif: bool) -> list[str]:
    """What the header says will change beyond the pixel format: EXIF rotation, extra frames
    (found without counting them, which would seek through every page), a 16-bit RGB file read
    as 8-bit. ``has_exif`` False skips the EXIF lookup, which decodes a whole PNG."""
    notes = []
    if image.mode == "RGB" and any(";16" in str(tile.args) for tile in image.tile or []):
        notes.append("16-bit RGB → 8-bit")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if has_exif else 1
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    if getattr(image, "is_animated", False):
        notes.append("first frame of several")
    return notes


class Decoded(NamedTuple):
    image: Image.Image  # upright 8-bit RGB
    note: str | None  # what was converted, None when nothing was
    scale: float  # the scale chosen by the caller
    full_width: int  # upright width at full resolution (image may be smaller after a draft)


def open_rgb(path: str | os.PathLike, choose_scale=None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode ``path`` as upright 8-bit RGB.

    ``choose_scale(width, height)`` sees the upright full size before decoding and returns the
    scale the caller will resize to; below 1/2 a JPEG is decoded at a reduced size (DCT scaling),
    so the returned image may be smaller than the file's full size. Raises UnreadableImage for
    anything that is not a decodable image — whatever the image library raised, with the reason —
    and, before decoding, for an image whose header declares more than ``max_pixels`` pixels."""
    path = Path(path)
    try:
        _require_regular_file(path)
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as image:
            warnings.simplefilter("always")  # what the decoder says of a damaged file goes into the file's note
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise UnreadableImage(f"{width}×{height} pixels is over the budget of {max_pixels} "
                                      f"(a decompression bomb, or a larger image than this run takes)")
            png = _png_without_exif(path) if image.format == "PNG" else None
            notes = _layout_notes(image, has_exif=png is None)
            full_width, full_height = image.size if png is not None else upright_size(image)
            png = png if image.mode == "RGB" else None  # what libspng decodes fast
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
            notes += list(dict.fromkeys(f"the decoder warned: {str(w.message).strip()}" for w in caught))
            return Decoded(image, "; ".join(notes) or None, scale, full_width)
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 — a damaged file makes Pillow raise almost anything (TypeError, KeyError…)
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from None


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB → float 3×H×W in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
