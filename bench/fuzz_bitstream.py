"""Fuzz the decoder with hostile files: every one must be refused with a BitstreamError or decode
the same way twice, within what its declared size needs — never crash.

    python bench/fuzz_bitstream.py --files 10000 [--seed 0] [--jobs 2] [--max-pixels 262144]

A tiny HiFiC (the tests' size, entropy tables from ``update()``) encodes a few small images;
each file is then mutated as an attacker would, with the CRC recomputed: bit and byte flips,
truncations, insertions and deletions anywhere; every header field (magic, version, sizes,
fingerprint, string count, string lengths) set to edge values; each entropy-coded string
emptied, truncated, extended, overwritten or swapped with the header kept consistent. Each file
is decoded twice in a child process forked for it (a crash is counted, not fatal), which
reports both decodes' hashes, the time of the first and its peak memory. Prints counts: refused
(with a histogram of the reasons), decoded, crashes, non-deterministic, other exceptions,
timeouts, and the costliest files beside a genuine file of the budget's size.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import argparse
import collections
import hashlib
import json
import os
import random
import re
import resource
import signal
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from osdic.codec.bitstream import BitstreamError, CompressedImage, pack, unpack
from osdic.codec.image_codec import compress_image, decompress_outputs
from osdic.codec.package import export_package, load_package
from osdic.models.hific import HiFiCCompressor

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)
IMAGE_SIZES = [(64, 64), (90, 130), (128, 96), (40, 200)]
#: header fields: (name, offset, struct format)
FIELDS = [("magic", 0, "4s"), ("version", 4, "B"), ("height", 5, "I"), ("width", 9, "I"),
          ("fingerprint", 13, "8s"), ("n_strings", 21, "B")]
LENGTHS_OFFSET = 22


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
    """Smooth gradients, a few edges and noise: enough structure for a varied bitstream."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(xx * rng.uniform(2, 12) + yy * rng.uniform(2, 12) + rng.uniform(0, 6)) for _ in range(3)]
    image = (np.stack(channels) + 1) / 2 + rng.normal(0, 0.08, (3, height, width))
    return torch.from_numpy(image.clip(0, 1)).float()


def _reseal(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def _edge_value(rng: random.Random, original: int, bits: int) -> int:
    top = (1 << bits) - 1
    candidates = [0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 65, 255, 256, 1000, 1024, 2048, 4096, 8192, 32767, 32768,
                  32769, 65535, 1 << 31, top, original + 1, original - 1, original + 4, original - 4, original * 2,
                  original // 2, rng.randrange(top + 1), rng.randrange(1, 1024)]
    return rng.choice(candidates) & top


def _mutate_string(rng: random.Random, string: bytes) -> tuple[str, bytes]:
    words = len(string) // 4
    kind = rng.choice(["empty", "truncate-words", "truncate-bytes", "extend", "random", "ones", "zeros", "flip"])
    if kind == "empty":
        return kind, b""
    if kind == "truncate-words":
        return kind, string[: 4 * rng.randrange(words + 1)]
    if kind == "truncate-bytes":
        return kind, string[: rng.randrange(len(string) + 1)]
    if kind == "extend":
        fill = rng.choice([b"\x00", b"\xff", None])
        extra = rng.randrange(1, 64)
        return kind, string + (fill * extra if fill else rng.randbytes(extra))
    if kind == "random":
        return kind, rng.randbytes(len(string))
    if kind == "ones":
        return kind, b"\xff" * len(string)
    if kind == "zeros":
        return kind, bytes(len(string))
    data = bytearray(string)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return kind, bytes(data)


def mutate(rng: random.Random, genuine: bytes) -> tuple[str, bytes]:
    """One hostile variant of a genuine file (CRC recomputed) and the name of its mutation."""
    body = bytearray(genuine[:-4])
    family = rng.choice(["bits", "bytes", "truncate", "insert", "delete", "field", "length", "string", "swap"])
    if family == "bits":
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif family == "bytes":
        for _ in range(rng.choice([1, 2, 8])):
            body[rng.randrange(len(body))] = rng.randrange(256)
    elif family == "truncate":
        body = body[: rng.randrange(len(body))]
    elif family == "insert":
        at = rng.randrange(len(body) + 1)
        body[at:at] = rng.randbytes(rng.choice([1, 2, 3, 4, 8, 64]))
    elif family == "delete":
        at = rng.randrange(len(body))
        del body[at : at + rng.choice([1, 2, 3, 4, 8, 64])]
    elif family == "field":
        name, offset, fmt = rng.choice(FIELDS)
        (original,) = struct.unpack_from(">" + fmt, body, offset)
        if fmt.endswith("s"):
            value = rng.randbytes(len(original))
        else:
            value = _edge_value(rng, original, 8 * struct.calcsize(">" + fmt))
        struct.pack_into(">" + fmt, body, offset, value)
        family = f"field-{name}"
    elif family == "length":
        n_strings = body[LENGTHS_OFFSET - 1]
        offset = LENGTHS_OFFSET + 4 * rng.randrange(n_strings)
        (original,) = struct.unpack_from(">I", body, offset)
        struct.pack_into(">I", body, offset, _edge_value(rng, original, 32))
    else:
        image = unpack(genuine)
        strings = list(image.strings)
        if family == "swap":
            strings.reverse()
        else:
            which = rng.randrange(len(strings))
            kind, strings[which] = _mutate_string(rng, strings[which])
            family = f"string{which}-{kind}"
        return family, pack(CompressedImage(image.height, image.width, image.fingerprint, tuple(strings)))
    return family, _reseal(bytes(body))


def _reason(exc: BaseException) -> str:
    """The message with its byte strings, hex and numbers blurred, so refusals group by reason."""
    message = re.sub(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\"", "b'…'", str(exc))
    return re.sub(r"\b[0-9a-f]{16}\b|\d+", "N", message)[:90]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _decode_in_child(codec, fingerprint: bytes, data: bytes, max_pixels: int, write_fd: int) -> None:
    report: dict = {}
    resident_before = _rss_mb()
    try:
        hashes = []
        for attempt in range(2):
            start = time.perf_counter()
            outputs = decompress_outputs(codec, fingerprint, data, max_pixels)
            if attempt == 0:
                report["seconds"] = time.perf_counter() - start
            digest = hashlib.sha256()
            for key in sorted(outputs):
                digest.update(outputs[key].cpu().numpy().tobytes())
            hashes.append(digest.hexdigest())
        report["outcome"] = "decoded" if hashes[0] == hashes[1] else "non-deterministic"
    except BitstreamError as exc:
        report.update(outcome="refused", reason=_reason(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 — anything but a BitstreamError is a finding
        report.update(outcome="other exception", reason=f"{type(exc).__name__}: {_reason(exc)}")
    # the peak resident memory this decode added to what the child started with
    report["memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - resident_before
    os.write(write_fd, json.dumps(report).encode())


def run_files(codec, fingerprint: bytes, files: list[tuple[str, bytes]], max_pixels: int, jobs: int,
              timeout: float, progress: bool = True) -> list[dict]:
    """Decode each file twice in a child forked for it, ``jobs`` at a time."""
    results: list[dict | None] = [None] * len(files)
    running: dict[int, tuple[int, float, int]] = {}  # pid → (file index, start, read fd)
    pending = iter(range(len(files)))
    done = 0

    def launch(index: int) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: decode, report, leave without running the parent's clean-up
            os.close(read_fd)
            try:
                _decode_in_child(codec, fingerprint, files[index][1], max_pixels, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        running[pid] = (index, time.perf_counter(), read_fd)

    for index in pending:
        launch(index)
        if len(running) >= jobs:
            break
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.perf_counter()
            for child, (index, start, _) in list(running.items()):
                if now - start > timeout:
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.002)
            continue
        index, start, read_fd = running.pop(pid)
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        kind, data = files[index]
        result = {"kind": kind, "bytes": len(data), "wall": time.perf_counter() - start, "memory_mb": 0.0}
        try:
            header = unpack(data)
            result["declared"] = (header.height, header.width)
        except BitstreamError:
            result["declared"] = None
        if os.WIFSIGNALED(status):
            signal_number = os.WTERMSIG(status)
            result["outcome"] = "timeout" if signal_number == signal.SIGKILL else "crash"
            result["reason"] = signal.Signals(signal_number).name
        else:
            result.update(json.loads(payload) if payload else {"outcome": "crash", "reason": "no report"})
        results[index] = result
        done += 1
        if progress and done % 1000 == 0:
            print(f"  {done}/{len(files)} files", flush=True)
        next_index = next(pending, None)
        if next_index is not None:
            launch(next_index)
    return results


def build_codec(seed: int, directory: Path):
    torch.manual_seed(seed)
    package = export_package(HiFiCCompressor(**TINY).eval(), directory)
    return load_package(package)


def fuzz(files: int, seed: int, jobs: int, max_pixels: int, timeout: float) -> dict:
    torch.set_num_threads(1)  # children are forked: keep the parent free of worker threads
    rng, image_rng = random.Random(seed), np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as directory:
        codec, fingerprint = build_codec(seed, Path(directory))
    genuine = [compress_image(codec, fingerprint, synthetic_image(image_rng, h, w)) for h, w in IMAGE_SIZES]
    mutated = [mutate(rng, rng.choice(genuine)) for _ in range(files)]
    side = int(max_pixels**0.5)
    at_budget = compress_image(codec, fingerprint, synthetic_image(image_rng, side, side))
    (reference,) = run_files(codec, fingerprint, [("genuine at the budget", at_budget)], max_pixels, 1, timeout,
                             progress=False)
    start = time.perf_counter()
    results = run_files(codec, fingerprint, mutated, max_pixels, jobs, timeout)
    elapsed = time.perf_counter() - start
    outcomes = collections.Counter(r["outcome"] for r in results)
    reasons = collections.Counter(r["reason"] for r in results if r["outcome"] == "refused")
    findings = [r for r in results if r["outcome"] not in ("refused", "decoded")]
    return {
        "files": files, "seed": seed, "max_pixels": max_pixels, "genuine_bytes": [len(g) for g in genuine],
        "elapsed_s": elapsed, "outcomes": dict(outcomes), "reasons": dict(reasons.most_common()),
        "findings": findings[:20],
        "slowest": sorted(results, key=lambda r: r["wall"], reverse=True)[:5],
        "largest_memory": max(results, key=lambda r: r["memory_mb"]),
        "reference": reference,
        "kinds": dict(collections.Counter(r["kind"].split("-")[0] for r in results)),
    }


def _describe(result: dict) -> str:
    declared = "×".join(map(str, result["declared"])) if result["declared"] else "unreadable header"
    return (f"{result['wall']:.2f} s, +{result['memory_mb']:.0f} MB — {result['kind']}, {result['bytes']} bytes, "
            f"declared {declared}, {result['outcome']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="files decoded at once")
    parser.add_argument("--max-pixels", type=int, default=512 * 512, help="the decoding budget the fuzzer sets")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a decode counts as a hang")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    summary = fuzz(args.files, args.seed, args.jobs, args.max_pixels, args.timeout)
    print(f"{summary['files']} mutated files (seed {summary['seed']}) of {len(summary['genuine_bytes'])} genuine "
          f"ones ({', '.join(map(str, summary['genuine_bytes']))} bytes), budget {summary['max_pixels']} pixels, "
          f"{summary['elapsed_s']:.0f} s")
    print("mutations: " + ", ".join(f"{k} {n}" for k, n in sorted(summary["kinds"].items())))
    for outcome in ["refused", "decoded", "crash", "non-deterministic", "other exception", "timeout"]:
        print(f"{outcome:>18}: {summary['outcomes'].get(outcome, 0)}")
    print("refusals by reason:")
    for reason, count in summary["reasons"].items():
        print(f"  {count:6d}  {reason}")
    for finding in summary["findings"]:
        print(f"FINDING: {finding['outcome']} ({finding.get('reason')}): {_describe(finding)}")
    print("slowest:")
    for result in summary["slowest"]:
        print(f"  {_describe(result)}")
    print(f"largest memory: {_describe(summary['largest_memory'])}")
    print(f"genuine file at the budget size: {_describe(summary['reference'])}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
