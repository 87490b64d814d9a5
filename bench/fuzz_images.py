"""Fuzz the image reader with damaged and hostile files: every one must decode or be skipped with
an UnreadableImage naming the reason — never another exception, a crash, a hang or gigabytes.

    python bench/fuzz_images.py --files 10000 [--seed 0] [--timeout 20] [--memory-gb 2]

Seeds are small real files of every kind a dataset holds: RGB and 16-bit PNGs, JPEG, multi-page
TIFFs (raw, LZW, deflate), animated GIF and WebP. Each file is mutated as damage or an attacker
would: bit and byte flips, edge values, truncations, insertions, duplicated and deleted blocks,
PNG chunks resealed with their CRC recomputed (so the decoder itself sees the damage), and the
declared size set huge (a decompression bomb). Each file is read by ``osdic.images.open_rgb`` —
the reader training, evaluation, ``compress`` and ``prepare-shards`` use — in a child process
forked for it, under a memory limit and a timeout. Prints the counts: decoded, skipped (with a
histogram of the reasons), other exceptions, crashes, timeouts, and the slowest file.
"""

from __future__ import annotations

import collections
import io
import random
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from forked import fuzz_parser, run_forked
from osdic.images import UnreadableImage, open_rgb  # imported once: every forked child has it


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([np.sin(xx / rng.uniform(3, 20) + c) * 100 + yy for c in range(3)], -1) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _png16(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + (pixels[y].astype(">u2") * 257).tobytes() for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def seeds(rng: np.random.Generator) -> dict[str, bytes]:
    """One small file of each kind."""
    frames = [Image.fromarray(_photo(rng, 40 + 8 * i, 56 - 4 * i)) for i in range(3)]  # pages of a TIFF
    animation = [Image.fromarray(_photo(rng, 40, 56)) for _ in range(3)]  # an animation's frames share a canvas
    out = {}
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG")
    out["png"] = buffer.getvalue()
    out["png16"] = _png16(_photo(rng, 24, 32))
    buffer = io.BytesIO()
    frames[0].save(buffer, "JPEG", quality=80)
    out["jpeg"] = buffer.getvalue()
    for compression in ("raw", "tiff_lzw", "tiff_adobe_deflate"):
        buffer = io.BytesIO()
        frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:], compression=compression)
        out[f"tiff-{compression}"] = buffer.getvalue()
    buffer = io.BytesIO()
    animation[0].save(buffer, "GIF", save_all=True, append_images=animation[1:], duration=50, loop=0)
    out["gif"] = buffer.getvalue()
    buffer = io.BytesIO()
    animation[0].save(buffer, "WEBP", save_all=True, append_images=animation[1:], duration=50)
    out["webp"] = buffer.getvalue()
    return out


def _resealed_png(data: bytes, rng: random.Random) -> bytes:
    """A PNG with one chunk's payload damaged and every CRC recomputed: past the checksum check."""
    chunks, position = [], 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind, payload = data[position + 4:position + 8], bytearray(data[position + 8:position + 8 + length])
        chunks.append([kind, payload])
        position += 12 + length
    kind, payload = rng.choice(chunks)
    for _ in range(rng.randint(1, 4)):
        if payload:
            payload[rng.randrange(len(payload))] = rng.randrange(256)
    return data[:8] + b"".join(_chunk(k, bytes(p)) for k, p in chunks)


def _huge(kind: str, data: bytes, rng: random.Random) -> bytes:
    """The declared size set huge where the format keeps it (a decompression bomb's header)."""
    side = rng.choice([23000, 65535, 1 << 20, 10_000_000])
    if kind.startswith("png"):
        ihdr = bytearray(data[16:29])
        ihdr[0:8] = struct.pack(">II", side, rng.choice([side, 1, 64]))
        return data[:8] + _chunk(b"IHDR", bytes(ihdr)) + data[33:]
    if kind == "gif":
        return data[:6] + struct.pack("<HH", min(side, 65535), min(side, 65535)) + data[10:]
    if kind == "webp":
        position = data.find(b"VP8X")
        if position >= 0:  # the canvas, 24-bit width − 1 and height − 1
            canvas = min(side, 1 << 24) - 1
            return data[:position + 12] + canvas.to_bytes(3, "little") * 2 + data[position + 18:]
    return bytes(data)


def mutate(kind: str, data: bytes, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(data)
    how = rng.choice(["bits", "bytes", "edges", "truncate", "insert", "duplicate", "delete", "reseal", "huge"])
    if how == "bits":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif how == "bytes":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "edges":
        position = rng.randrange(len(data) - 4)
        data[position:position + 4] = rng.choice([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                                  b"\x80\x00\x00\x00", b"\x00\x00\x01\x00"])
    elif how == "truncate":
        data = data[:rng.randrange(1, len(data))]
    elif how == "insert":
        position = rng.randrange(len(data))
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "duplicate":
        start = rng.randrange(len(data))
        block = data[start:start + rng.randint(1, 256)]
        position = rng.randrange(len(data))
        data[position:position] = block
    elif how == "delete":
        start = rng.randrange(len(data))
        del data[start:start + rng.randint(1, 256)]
    elif how == "reseal" and kind.startswith("png"):
        data = bytearray(_resealed_png(bytes(data), rng))
    elif how in ("reseal", "huge"):
        how = "huge"
        data = bytearray(_huge(kind, bytes(data), rng))
    return how, bytes(data)


def _read(path: str) -> tuple[str, str, float]:
    """open_rgb in the forked child: the outcome, its detail and the seconds it took."""
    start = time.perf_counter()
    try:
        image = open_rgb(path).image
        outcome, detail = "decoded", f"{image.width}x{image.height}"
    except UnreadableImage as exc:
        outcome, detail = "skipped", str(exc).split(":")[0][:60]
    except BaseException as exc:  # noqa: BLE001 — what the fuzz looks for
        outcome, detail = "exception", f"{type(exc).__name__}: {exc}"[:200]
    return outcome, detail, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = fuzz_parser(__doc__.splitlines()[0], "--files", 1000, 20.0).parse_args(argv)
    rng, np_rng = random.Random(args.seed), np.random.default_rng(args.seed)
    originals = seeds(np_rng)
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    failures: list[str] = []
    slowest = (0.0, "")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.files):
            kind = rng.choice(sorted(originals))
            how, data = mutate(kind, originals[kind], rng)
            suffix = {"png16": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp"}.get(kind, "." + kind.split("-")[0])
            path = Path(folder) / f"fuzz{number}{suffix}"
            path.write_bytes(data)
            outcome, detail, seconds = run_forked(_read, (str(path),), args.timeout, int(args.memory_gb * 2**30))
            seconds = args.timeout if outcome == "timeout" else seconds or 0.0
            counts[outcome] += 1
            if outcome == "skipped":
                reasons[detail] += 1
            elif outcome != "decoded":
                failures.append(f"{kind}/{how} #{number}: {outcome} {detail}")
            if seconds > slowest[0]:
                slowest = (seconds, f"{kind}/{how} #{number} ({outcome})")
            path.unlink()
            if (number + 1) % max(1, args.files // 10) == 0:
                print(f"[fuzz_images] {number + 1}/{args.files}, {time.perf_counter() - start:.0f} s", flush=True)
    print(f"{args.files} files from {len(originals)} seeds ({', '.join(sorted(originals))}), seed {args.seed}:")
    for outcome in ("decoded", "skipped", "exception", "crash", "timeout"):
        print(f"  {outcome}: {counts[outcome]}")
    print("  skip reasons: " + ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common(8)))
    print(f"  slowest: {slowest[0]:.2f} s, {slowest[1]}")
    for failure in failures[:20]:
        print(f"  FAIL {failure}")
    return {"counts": dict(counts), "failures": failures}


if __name__ == "__main__":
    result = main()
    raise SystemExit(1 if result["failures"] else 0)
