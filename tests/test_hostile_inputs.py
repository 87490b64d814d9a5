"""Files from strangers and a real scheduler's preemption: damaged and oversized images are skipped
and counted with the reason, hostile codec packages are refused with one clear line, and nothing
they hold steers compressai's C++ coder or runs code."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdic.images import UnreadableImage, list_images, open_rgb

REPO = Path(__file__).resolve().parent.parent


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# ------------------------------------------------------------------------------ images
def test_image_fuzz_finds_no_exception_crash_or_hang_in_the_reader_every_stage_uses():
    """400 damaged TIFF/GIF/WebP/PNG/JPEG files through open_rgb (bench/fuzz_images.py)."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz_images.py"), "--files", "400", "--seed", "1"],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    for outcome in ("exception", "crash", "timeout"):
        assert f"  {outcome}: 0" in result.stdout, result.stdout[-3000:]


def test_a_decompression_bomb_is_skipped_from_its_header_before_decoding(tmp_path):
    """A 23000² PNG of a few kilobytes (6 GB decoded) costs nothing and says why."""
    rows = zlib.compress(b"\x00" * (1 + 3 * 23000) * 64)  # only the first rows are there: the header is the bomb
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 23000, 23000, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))
    start = time.perf_counter()
    with pytest.raises(UnreadableImage, match="23000×23000 pixels is over the budget of 67108864"):
        open_rgb(bomb)
    assert time.perf_counter() - start < 2
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "fine.png")
    with pytest.raises(UnreadableImage, match="over the budget of 1000"):
        open_rgb(tmp_path / "fine.png", max_pixels=1000)  # the budget is configurable (data.max_image_pixels)


def test_a_multipage_tiff_with_damaged_later_pages_is_skipped_with_the_reason(tmp_path):
    pages = [Image.fromarray(np.full((32, 48, 3), value, np.uint8)) for value in (10, 120, 240)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    data = buffer.getvalue()
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(data[: len(data) - 40])  # the last page's directory cut short
    try:
        decoded = open_rgb(damaged)  # the first page may still decode; then it says what happened
        assert decoded.note
    except UnreadableImage as exc:
        assert str(exc)


def test_a_sixteen_bit_png_is_counted_as_converted(tmp_path):
    height, width = 8, 12
    raw = b"".join(b"\x00" + (np.arange(width * 3, dtype=">u2") * 1000).tobytes() for _ in range(height))
    path = tmp_path / "deep.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    decoded = open_rgb(path)
    assert decoded.image.mode == "RGB" and "16-bit RGB → 8-bit" in decoded.note


def test_symlinked_folders_are_followed_and_a_loop_is_walked_once(tmp_path):
    (tmp_path / "real" / "inner").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "real" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "real" / "inner" / "b.png")
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "inner" / "back").symlink_to(tmp_path / "real", target_is_directory=True)  # a loop
    with pytest.warns(RuntimeWarning, match="symlink loop"):
        found = list_images([root])
    assert [p.relative_to(root).as_posix() for p in found] == ["linked/a.png", "linked/inner/b.png"]
