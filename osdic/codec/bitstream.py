"""The file format of one compressed image.

Layout (big-endian):

    magic        4 bytes   b"OSDC"
    version      u8        FORMAT_VERSION
    height       u32       original image height (pixels)
    width        u32       original image width (pixels)
    fingerprint  8 bytes   identifies the codec package that wrote the file
    n_strings    u8        number of entropy-coded strings
    lengths      u32 × n   byte length of each string
    strings      ...       the entropy-coded strings (ŷ's first, then ẑ)
    crc32        u32       CRC-32 of everything above

bpp is counted on the whole file (header and checksum included) over the original pixels.
Every field is checked before anything is allocated from it, so a damaged, truncated or foreign
file raises :class:`BitstreamError` with a readable message, never a crash, a hang or a huge
allocation. A declared size over the caller's pixel budget is refused here, before decoding
spends anything on it; the entropy-coded strings are checked by ``osdic.codec.entropy_guard``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"OSDC"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 8
#: The largest image side a file may declare (well above any benchmark image).
MAX_SIDE = 1 << 15
#: ELIC-style entropy models write two strings per channel group (a checkerboard pass each) and ẑ's
MAX_STRINGS = 64
#: Default decoding budget: 4096² pixels covers every benchmark set (≤ 3 MP), 12 MP photos and
#: 4K UHD frames, while decoding time and memory grow with the declared size, whatever the file's.
DEFAULT_MAX_PIXELS = 4096 * 4096

_HEADER = struct.Struct(">4sBII8sB")
_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")


class BitstreamError(ValueError):
    """The bytes are not a valid compressed image for this codec."""


@dataclass(frozen=True)
class CompressedImage:
    height: int
    width: int
    fingerprint: bytes
    strings: tuple[bytes, ...]

    @property
    def pixels(self) -> int:
        return self.height * self.width


def pack(image: CompressedImage) -> bytes:
    if not (0 < image.height <= MAX_SIDE and 0 < image.width <= MAX_SIDE):
        raise BitstreamError(f"image size {image.height}×{image.width} outside 1..{MAX_SIDE}")
    if len(image.fingerprint) != FINGERPRINT_BYTES:
        raise BitstreamError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if not 0 < len(image.strings) <= MAX_STRINGS:
        raise BitstreamError(f"between 1 and {MAX_STRINGS} strings can be stored, got {len(image.strings)}")
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, image.height, image.width, image.fingerprint, len(image.strings))]
    parts += [_LENGTH.pack(len(s)) for s in image.strings]
    parts += list(image.strings)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def unpack(
    data: bytes, expected_fingerprint: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> CompressedImage:
    """Parse and validate a file; refuse one written by another codec package or declaring
    more than ``max_pixels`` pixels."""
    data = bytes(data)
    if len(data) < _HEADER.size + _CRC.size:
        raise BitstreamError(f"file too short to be a compressed image ({len(data)} bytes)")
    magic, version, height, width, fingerprint, n_strings = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError(f"not a compressed image: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported format version {version} (this build reads {FORMAT_VERSION})")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise BitstreamError("checksum mismatch: the file is damaged or truncated")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise BitstreamError(f"declared image size {height}×{width} outside 1..{MAX_SIDE}")
    if height * width > max_pixels:
        raise BitstreamError(
            f"declared image size {height}×{width} ({height * width} pixels) is over the decoding budget of "
            f"{max_pixels} pixels (raise max_pixels / --max-pixels to decode it)"
        )
    if not 0 < n_strings <= MAX_STRINGS:
        raise BitstreamError(f"declared {n_strings} strings, expected 1..{MAX_STRINGS}")
    offset = _HEADER.size
    if len(body) < offset + n_strings * _LENGTH.size:
        raise BitstreamError("file truncated inside the string table")
    lengths = [_LENGTH.unpack_from(body, offset + i * _LENGTH.size)[0] for i in range(n_strings)]
    offset += n_strings * _LENGTH.size
    if offset + sum(lengths) != len(body):
        raise BitstreamError(
            f"string lengths add up to {sum(lengths)} bytes but {len(body) - offset} bytes follow the header"
        )
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        raise BitstreamError(
            f"file was written by another codec (fingerprint {fingerprint.hex()}, "
            f"this codec is {expected_fingerprint.hex()}); decode it with the package that encoded it"
        )
    strings = []
    for length in lengths:
        strings.append(body[offset : offset + length])
        offset += length
    return CompressedImage(height, width, fingerprint, tuple(strings))
