"""A damaged, truncated or foreign file gives a clear error, never a crash, hang or huge allocation."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osdic.codec.bitstream import DEFAULT_MAX_PIXELS, MAGIC, BitstreamError, CompressedImage, pack, unpack
from osdic.codec.cli import compress_main, decompress_main
from osdic.codec.entropy_guard import guard_entropy_coders, guarded_string
from osdic.codec.image_codec import decompress_bytes
from osdic.codec.package import export_package, load_package
from osdic.models.entropy import scale_table
from osdic.models.hific import HiFiCCompressor

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


def test_decompressing_a_file_never_imports_the_training_side(package_dir, encoded, tmp_path):
    """The library decodes alone: Lightning and Hydra (seconds of start-up) are never imported."""
    args = ["--codec", str(package_dir), str(encoded / "photo.osdc"), "-o", str(tmp_path / "decoded.png")]
    training_side = ("pytorch_lightning", "lightning", "hydra", "lightning_modules", "datamodules", "callbacks")
    script = (f"import sys\nfrom osdic.codec.cli import decompress_main\nstatus = decompress_main({args!r})\n"
              f"print(sorted(m for m in {training_side!r} if m in sys.modules))\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "decoded.png").is_file()


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


# ----------------------------------------------------------------- hostile files (CRC recomputed)
def _with_strings(data: bytes, *strings: bytes) -> bytes:
    image = unpack(data)
    return pack(CompressedImage(image.height, image.width, image.fingerprint, strings))


def test_file_with_empty_strings_is_refused(package_dir):
    codec, fingerprint = load_package(package_dir)
    data = pack(CompressedImage(90, 130, fingerprint, (b"", b"")))
    assert len(data) == 34
    with pytest.raises(BitstreamError, match="string of 0 bytes"):
        decompress_bytes(codec, fingerprint, data)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda y, z: (y[:-1], z), "whole 32-bit words"),
        (lambda y, z: (y, z[:4]), "string of 4 bytes"),
        (lambda y, z: (y, z + bytes(4096)), "the encoder writes 8 to"),
    ],
    ids=["odd-length", "shorter-than-the-final-state", "longer-than-the-encoder-writes"],
)
def test_strings_no_encoder_emits_are_refused(package_dir, encoded, mutate, message):
    codec, fingerprint = load_package(package_dir)
    data = (encoded / "photo.osdc").read_bytes()
    with pytest.raises(BitstreamError, match=message):
        decompress_bytes(codec, fingerprint, _with_strings(data, *mutate(*unpack(data).strings)))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda y, z: (y[: len(y) // 16 * 4], z),
        lambda y, z: (y, b"\xff" * len(z)),
        lambda y, z: (b"\xff" * len(y), z),
        lambda y, z: (random.Random(0).randbytes(len(y)), z),
    ],
    ids=["y-truncated", "z-all-ones", "y-all-ones", "y-random"],
)
def test_hostile_strings_decode_the_same_every_time(package_dir, encoded, mutate):
    codec, fingerprint = load_package(package_dir)
    genuine = (encoded / "photo.osdc").read_bytes()
    hostile = _with_strings(genuine, *mutate(*unpack(genuine).strings))
    decoded = []
    for _ in range(4):  # a decoder serving other files in between, as a server does
        decoded.append(decompress_bytes(codec, fingerprint, hostile).nan_to_num())
        decompress_bytes(codec, fingerprint, genuine)
    assert all(torch.equal(image, decoded[0]) for image in decoded)


def test_padding_covers_every_read_of_the_rans_decoder(package_dir):
    """Decoding escape-heavy strings from the padded buffer gives the same symbols whatever
    follows it: the decoder never reads past the padding."""
    codec, _ = load_package(package_dir)
    conditional = codec.entropy_model.gaussian_conditional
    tables = (conditional._quantized_cdf.tolist(), conditional._cdf_length.tolist(), conditional._offset.tolist())
    decoder, n, rng = conditional.entropy_coder._decoder, 128, random.Random(0)
    longest = 4 * (n + 2)
    for string in [b"\xff" * longest, b"\xff" * 8, bytes(8) + b"\xff" * (longest - 8), rng.randbytes(longest)]:
        padded = guarded_string(string, n)
        # index 0, the narrowest scale: escapes are likeliest
        tails = [b"", b"\xff" * 4096, rng.randbytes(4096)]
        decoded = [decoder.decode_with_indexes(padded + tail, [0] * n, *tables) for tail in tails]
        assert decoded[0] == decoded[1] == decoded[2]


def test_compressai_latent_codecs_get_the_guard():
    """An ELIC-style checkerboard latent codec (compressai.latent_codecs) is guarded by
    guard_entropy_coders alone: genuine strings decode as before, hostile ones are refused."""
    from compressai.latent_codecs import CheckerboardLatentCodec, GaussianConditionalLatentCodec
    from compressai.layers import CheckerboardMaskedConv2d

    torch.manual_seed(0)
    c = 4
    latent_codec = CheckerboardLatentCodec(
        latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
        entropy_parameters=torch.nn.Conv2d(4 * c, 2 * c, 1),
        context_prediction=CheckerboardMaskedConv2d(c, 2 * c, 5, padding=2),
    ).eval()
    latent_codec.y.gaussian_conditional.update_scale_table(scale_table(), force=True)
    side_params = torch.randn(1, 2 * c, 8, 8)
    strings = latent_codec.compress(torch.randn(1, c, 8, 8) * 3, side_params)["strings"]
    unguarded = latent_codec.decompress(strings, (c, 8, 8), side_params)["y_hat"]
    guard_entropy_coders(latent_codec)
    assert torch.equal(latent_codec.decompress(strings, (c, 8, 8), side_params)["y_hat"], unguarded)
    with pytest.raises(BitstreamError, match="string of 0 bytes"):
        latent_codec.decompress([[b""], strings[1]], (c, 8, 8), side_params)


def test_declared_size_over_the_budget_is_refused_before_decoding(package_dir, encoded, monkeypatch):
    codec, fingerprint = load_package(package_dir)
    monkeypatch.setattr(codec, "decompress", lambda *args: pytest.fail("decoding started"))
    huge = pack(CompressedImage(32768, 32768, fingerprint, unpack((encoded / "photo.osdc").read_bytes()).strings))
    with pytest.raises(BitstreamError, match=f"over the decoding budget of {DEFAULT_MAX_PIXELS} pixels"):
        decompress_bytes(codec, fingerprint, huge)


def test_the_caller_sets_the_pixel_budget(package_dir, encoded, tmp_path, capsys):
    codec, fingerprint = load_package(package_dir)
    data = (encoded / "photo.osdc").read_bytes()
    assert decompress_bytes(codec, fingerprint, data, max_pixels=90 * 130).shape[-2:] == (90, 130)
    with pytest.raises(BitstreamError, match="budget"):
        decompress_bytes(codec, fingerprint, data, max_pixels=90 * 130 - 1)
    args = ["--codec", str(package_dir), str(encoded / "photo.osdc"), "-o", str(tmp_path / "x.png")]
    assert decompress_main([*args, "--max-pixels", "10000"]) == 2
    assert "over the decoding budget of 10000 pixels" in capsys.readouterr().err


@pytest.mark.slow
def test_fuzzed_files_never_crash_and_decode_deterministically(tmp_path):
    """300 mutated files (bench/fuzz_bitstream.py, CRC recomputed), each decoded twice in its own process;
    BENCHMARKS.md records the 2,000-file run."""
    summary_path = tmp_path / "fuzz.json"
    script = Path(__file__).resolve().parents[1] / "bench" / "fuzz_bitstream.py"
    subprocess.run([sys.executable, str(script), "--files", "300", "--json", str(summary_path)], check=True)
    summary = json.loads(summary_path.read_text())
    assert summary["findings"] == []
    assert summary["outcomes"]["refused"] > 0 and summary["outcomes"]["decoded"] > 0
