"""A whole image stored as a grid of independently coded tiles, so that a crop decodes only the
tiles it touches (9 of the 176 128² tiles of a 2K photo for a 256² crop), not the whole photo.

Layout (little-endian): ``TILE``, then version, height, width, tile side, codec, tile count as
uint32, then (length, CRC-32) per tile in row-major order, then the tiles' bytes. Both codecs are
lossless: ``png`` (about the size of the source PNGs) and ``raw`` (8-bit RGB pixels, about 3×
larger, no decoding). The CRC catches a damaged shard whichever the codec.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from osdic.images import decode_png

MAGIC = b"TILE"
VERSION = 1
CODECS = ("png", "raw")
_HEADER = len(MAGIC) + 6 * 4


def encode_tiles(pixels: np.ndarray, tile: int, codec: str = "png", compress_level: int = 6) -> bytes:
    """``pixels`` (H×W×3 uint8) as tiles of ``tile``² (smaller at the right and bottom edges)."""
    height, width, _ = pixels.shape
    payloads = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            block = np.ascontiguousarray(pixels[top : top + tile, left : left + tile])
            if codec == "png":
                buffer = io.BytesIO()
                Image.fromarray(block).save(buffer, format="PNG", compress_level=compress_level)
                payloads.append(buffer.getvalue())
            else:
                payloads.append(block.tobytes())
    header = np.array([VERSION, height, width, tile, CODECS.index(codec), len(payloads)], "<u4")
    table = np.array([(len(p), zlib.crc32(p)) for p in payloads], "<u4")
    return MAGIC + header.tobytes() + table.tobytes() + b"".join(payloads)


class TiledImage:
    """Read access to an :func:`encode_tiles` record: its size and any rectangle of its pixels."""

    def __init__(self, data: bytes | memoryview):
        if data[: len(MAGIC)] != MAGIC:
            raise ValueError("not a tiled image: shards are written by `python -m datamodules.prepare`")
        version, self.height, self.width, self.tile, codec, count = map(int, np.frombuffer(data, "<u4", 6, len(MAGIC)))
        if version != VERSION:
            raise ValueError(f"tiled image version {version}; this code reads version {VERSION}: prepare the shards again")
        self.data, self.codec = data, CODECS[codec]
        self.lengths, self.crcs = np.frombuffer(data, "<u4", 2 * count, _HEADER).reshape(count, 2).T
        self.starts = _HEADER + 8 * count + np.concatenate([[0], np.cumsum(self.lengths[:-1], dtype=np.int64)])
        self.columns = -(-self.width // self.tile)

    def _block(self, row: int, column: int) -> np.ndarray:
        index = row * self.columns + column
        start = int(self.starts[index])
        payload = self.data[start : start + int(self.lengths[index])]
        if zlib.crc32(payload) != self.crcs[index]:
            raise ValueError(f"tile {index} of a shard record is damaged (CRC mismatch): prepare the shards again")
        shape = (min(self.tile, self.height - row * self.tile), min(self.tile, self.width - column * self.tile), 3)
        block = decode_png(bytes(payload)) if self.codec == "png" else np.frombuffer(payload, np.uint8)
        return block.reshape(shape)

    def region(self, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        """Pixels [top, bottom) × [left, right) as H×W×3 uint8, decoding only the tiles they touch."""
        out = np.empty((bottom - top, right - left, 3), np.uint8)
        for row in range(top // self.tile, (bottom - 1) // self.tile + 1):
            for column in range(left // self.tile, (right - 1) // self.tile + 1):
                block = self._block(row, column)
                y0, x0 = row * self.tile, column * self.tile
                ys, ye = max(top, y0), min(bottom, y0 + block.shape[0])
                xs, xe = max(left, x0), min(right, x0 + block.shape[1])
                out[ys - top : ye - top, xs - left : xe - left] = block[ys - y0 : ye - y0, xs - x0 : xe - x0]
        return out
