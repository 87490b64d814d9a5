"""A damaged, truncated or foreign file gives a clear error, never a crash, hang or huge allocation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from codec.bitstream import MAGIC, BitstreamError, CompressedImage, pack, unpack
from codec.cli import compress_main, decompress_main
from codec.image_codec import decompress_bytes
from codec.package import export_package, load_package
from models.hific import HiFiCCompressor

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    torch.manual_seed(0)
    return export_package(HiFiCCompressor(**TINY).eval(), tmp_path_factory.mktemp("pkg"))


@pytest.fixture(scope="module")
def encoded(package_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    photo = folder / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(photo)
    assert compress_main(["--codec", str(package_dir), str(photo), "-o", str(folder / "photo.osdc")]) == 0
    return folder


def test_cli_round_trip_writes_a_png_of_the_original_size(package_dir, encoded):
    out = encoded / "decoded.png"
    assert decompress_main(["--codec", str(package_dir), str(encoded / "photo.osdc"), "-o", str(out)]) == 0
    assert Image.open(out).size == (130, 90)


def _header(height, width, n_strings, lengths, payload=b""):
    body = struct.pack(">4sBII8sB", MAGIC, 1, height, width, bytes(8), n_strings)
    body += b"".join(struct.pack(">I", n) for n in lengths) + payload
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[: len(d) // 2], "checksum|truncated|short"),
        (lambda d: d[:10], "too short"),
        (lambda d: b"", "too short"),
        (lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:], "checksum"),
        (lambda d: b"\x89PNG\r\n\x1a\n" + d[8:], "not a compressed image"),
        (lambda d: d[:4] + b"\x07" + d[5:], "version"),
        (lambda d: _header(1 << 20, 1 << 20, 2, [0, 0]), "size"),
        (lambda d: _header(64, 64, 2, [1 << 31, 5], b"abc"), "lengths"),
        (lambda d: _header(64, 64, 200, []), "strings"),
    ],
    ids=["truncated-half", "truncated-header", "empty", "bit-flip", "png", "version", "huge-size", "huge-length", "many-strings"],
)
def test_bad_files_give_a_clear_error(package_dir, encoded, mutate, message):
    codec, fingerprint = load_package(package_dir)
    data = mutate((encoded / "photo.osdc").read_bytes())
    with pytest.raises(BitstreamError, match=message):
        decompress_bytes(codec, fingerprint, data)


def test_cli_reports_a_damaged_file_without_a_traceback(package_dir, encoded, tmp_path, capsys):
    damaged = tmp_path / "damaged.osdc"
    damaged.write_bytes((encoded / "photo.osdc").read_bytes()[:-7])
    assert decompress_main(["--codec", str(package_dir), str(damaged), "-o", str(tmp_path / "x.png")]) == 2
    assert "damaged or truncated" in capsys.readouterr().err


def test_wrong_string_count_for_the_codec_is_refused(package_dir):
    codec, fingerprint = load_package(package_dir)
    data = pack(CompressedImage(64, 64, fingerprint, (b"only-one",)))
    with pytest.raises(BitstreamError, match="needs 2"):
        decompress_bytes(codec, fingerprint, data)


def test_pack_unpack_round_trip():
    image = CompressedImage(17, 33, b"abcdefgh", (b"\x00\x01", b"", b"xyz"))
    assert unpack(pack(image), expected_fingerprint=b"abcdefgh") == image
