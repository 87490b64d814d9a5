"""Classical codecs through the same pipeline: JPEG, WebP, AVIF (Pillow), HEVC intra (pillow-heif,
the BPG family) and JPEG XL (pillow-jxl-plugin) where installed. A quality setting is searched so
the file's bpp matches a target (the learned codec's bpp on the same image)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

#: Pillow format name and quality range of each baseline.
CODECS = {"jpeg": ("JPEG", 1, 95), "webp": ("WEBP", 0, 100), "avif": ("AVIF", 0, 100), "hevc": ("HEIF", 0, 100),
          "jxl": ("JXL", 0, 100)}


def _register_plugins(codec: str) -> None:
    if codec == "hevc":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    if codec == "jxl":
        import pillow_jxl  # noqa: F401  (registers the JXL plugin)


def available(codec: str) -> bool:
    try:
        _register_plugins(codec)
        encode(Image.new("RGB", (16, 16)), codec, 50)
        return True
    except (ImportError, OSError, KeyError, ValueError):
        return False


def encode(image: Image.Image, codec: str, quality: int) -> bytes:
    fmt = CODECS[codec][0]
    buffer = io.BytesIO()
    options = {"quality": quality}
    if codec == "jpeg":
        options["subsampling"] = 2  # 4:2:0, libjpeg's default at these rates
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@dataclass
class Coded:
    data: bytes
    quality: int

    def bpp(self, pixels: int) -> float:
        return len(self.data) * 8 / pixels


def encode_at_bpp(image: Image.Image, codec: str, target_bpp: float) -> Coded:
    """Binary search of the quality whose file is closest in bpp to ``target_bpp``."""
    _register_plugins(codec)
    _, low, high = CODECS[codec]
    pixels = image.width * image.height
    best: Coded | None = None
    while low <= high:
        quality = (low + high) // 2
        coded = Coded(encode(image, codec, quality), quality)
        if best is None or abs(coded.bpp(pixels) - target_bpp) < abs(best.bpp(pixels) - target_bpp):
            best = coded
        if coded.bpp(pixels) > target_bpp:
            high = quality - 1
        else:
            low = quality + 1
    return best
