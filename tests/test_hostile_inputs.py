"""Files from strangers and a real scheduler's preemption: damaged and oversized images are skipped
and counted with the reason, hostile codec packages are refused with one clear line, and nothing
they hold steers compressai's C++ coder or runs code."""

from __future__ import annotations

import dataclasses
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


# ---------------------------------------------------------------------------- packages
GOLDEN = REPO / "tests" / "golden"


def _tampered_package(tmp_path: Path, change_config=None, change_weights=None, name: str = "tampered") -> Path:
    """The golden package changed as an attacker would, its fingerprint recomputed."""
    import json

    from safetensors.torch import load_file, save

    from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, _fingerprint

    manifest = json.loads((GOLDEN / "hific_tiny" / CONFIG_FILE).read_text())
    state = load_file(str(GOLDEN / "hific_tiny" / WEIGHTS_FILE))
    if change_weights:
        change_weights(state)
    if change_config:
        change_config(manifest["codec"])
    weights = save({k: v.contiguous() for k, v in state.items()})
    manifest["fingerprint"] = _fingerprint(manifest["codec"], weights).hex()
    folder = tmp_path / name
    folder.mkdir()
    (folder / WEIGHTS_FILE).write_bytes(weights)
    (folder / CONFIG_FILE).write_text(json.dumps(manifest))
    return folder


def _decoded_golden_file(package: Path):
    """The golden file decoded by ``package`` (its header's fingerprint made the package's)."""
    from osdic.codec.bitstream import pack, unpack
    from osdic.codec.image_codec import decompress_bytes
    from osdic.codec.package import load_package

    codec, fingerprint = load_package(package)
    image = unpack((GOLDEN / "image.osdc").read_bytes())
    return decompress_bytes(codec, fingerprint, pack(dataclasses.replace(image, fingerprint=fingerprint)))


@pytest.mark.parametrize("tables", ["one_row_for_every_index", "zero_rows_with_a_huge_length"])
def test_a_packages_coding_tables_are_rebuilt_from_its_parameters_never_read(tmp_path, tables):
    """One CDF row for 64 indexes made the C++ coder segfault; zeroed rows with a length of 5·10⁷
    read past the table (three decodes, three images). The tables are now the model's own."""
    import torch

    def hostile(state):
        for key in [k for k in state if k.endswith("_quantized_cdf")]:
            state[key] = torch.zeros(1, 64, dtype=torch.int32) if tables.startswith("one") else torch.zeros_like(state[key])
        for key in [k for k in state if k.endswith("_cdf_length")]:
            state[key] = torch.full_like(state[key], 50_000_000)

    genuine = _decoded_golden_file(GOLDEN / "hific_tiny")
    tampered = _tampered_package(tmp_path, change_weights=hostile)
    decodes = [_decoded_golden_file(tampered) for _ in range(3)]
    assert all(torch.equal(d, genuine) for d in decodes)


@pytest.mark.parametrize("quantiles", [float("nan"), 1e9])
def test_quantiles_a_coder_cannot_use_are_refused(tmp_path, quantiles):
    from osdic.codec.package import PackageError, load_package

    def hostile(state):
        key = next(k for k in state if k.endswith("quantiles"))
        state[key][..., 2] = quantiles

    with pytest.raises(PackageError, match="not finite|quantile range"):
        load_package(_tampered_package(tmp_path, change_weights=hostile))


def test_sizes_in_codec_json_are_checked_against_the_weights_before_anything_is_allocated(tmp_path):
    import resource

    from osdic.codec.package import PackageError, load_package

    with pytest.raises(PackageError, match="latent_channels = 30000 is out of range"):
        load_package(_tampered_package(tmp_path, lambda c: c.update(latent_channels=30000), name="huge"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PackageError, match="the weights do not fit the codec codec.json describes"):
        load_package(_tampered_package(tmp_path, lambda c: c.update(latent_channels=4000, hyper_channels=4000),
                                       name="large"))  # 4000² kernels: gigabytes, were they allocated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # kB


def _cli(*arguments: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", "import sys; from osdic.codec.cli import decompress_main; "
                                                 "sys.exit(decompress_main(sys.argv[1:]))", *arguments],
                          input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "0"})  # the package alone must keep it offline


def _sodec_package(tmp_path: Path) -> Path:
    from osdic.codec.package import export_package
    from training.config import instantiate_node
    from tests.conftest import TINY_SODEC, compose_config

    module = instantiate_node(compose_config(["model=sodec_stage2", *TINY_SODEC], tmp_path / "run").model, "model")
    return export_package(module.codec.eval(), tmp_path / "sodec")


def test_a_package_never_runs_a_models_own_code_nor_reaches_the_hub(tmp_path):
    """A ViT named by a folder whose config asks to run its own Python file, with "y" on stdin
    (transformers' prompt would run it); and one named by a Hub id, which must not be queried."""
    import json

    from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, _fingerprint

    package = _sodec_package(tmp_path)
    marker = tmp_path / "remote-code-ran"
    remote = tmp_path / "remote-model"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "hostile", "auto_map": {
        "AutoConfig": "hostile.HostileConfig", "AutoModel": "hostile.HostileModel"}}))
    (remote / "hostile.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for name, pretrained in [("remote", str(remote)), ("hub", "someone/model")]:
        manifest = json.loads((package / CONFIG_FILE).read_text())
        manifest["codec"]["guidance"]["vit"].update(pretrained=pretrained, config=None)
        manifest["fingerprint"] = _fingerprint(manifest["codec"], (package / WEIGHTS_FILE).read_bytes()).hex()
        (package / CONFIG_FILE).write_text(json.dumps(manifest))
        start = time.perf_counter()
        result = _cli("--codec", str(package), str(GOLDEN / "image.osdc"), "-o", str(tmp_path / "out.png"), stdin="y\n")
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert "cannot load the guidance ViT" in result.stderr, name
        assert time.perf_counter() - start < 60, "no Hub retries"
    assert not marker.exists() and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("manifest, reason", [
    ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"), ('{"format": 1}', "'codec' must be"),
    ('{"format": 1, "codec": {"_target_": "osdic.models.hific.HiFiCCompressor"}, "fingerprint": 5}', "'fingerprint' must"),
    ('{"format": 1, "codec": ' + "[" * 100000 + "]" * 100000 + ', "fingerprint": "00"}', "not valid JSON"),
])
def test_a_malformed_package_is_one_clear_line_and_exit_two(tmp_path, capsys, manifest, reason):
    """The CLI's own entry function, in this process (the remote-code test above runs it as a
    program): the exit status it returns and everything it wrote."""
    import shutil

    from osdic.codec.cli import decompress_main

    package = tmp_path / "package"
    shutil.copytree(GOLDEN / "hific_tiny", package)
    (package / "codec.json").write_text(manifest)
    status = decompress_main(["--codec", str(package), str(GOLDEN / "image.osdc"), "-o", str(tmp_path / "out.png")])
    written = capsys.readouterr()
    assert status == 2, written.err[-2000:]
    assert len(written.err.strip().splitlines()) == 1 and reason in written.err and not written.out


def test_package_fuzz_finds_no_crash_hang_nondeterminism_network_or_code_run():
    """30 hostile packages (bench/fuzz_packages.py, fingerprints recomputed): JSON fields and types,
    pretrained ids and remote-code folders, tensor shapes, dtypes and values, coding tables."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz_packages.py"), "--packages", "30",
                             "--seed", "3"], capture_output=True, text=True, timeout=1200, cwd=REPO)
    for outcome in ("nondeterministic", "crash", "timeout"):
        assert f"  {outcome}: 0" in result.stdout, result.stdout[-3000:]
    assert "network attempts: 0" in result.stdout and "code run: 0" in result.stdout


def test_a_package_whose_backbone_settings_are_a_string_is_refused_without_a_name_lookup(tmp_path, monkeypatch):
    """diffusers reads a string config as a Hub id to download: found by the package fuzz (a
    mutated ``unet_config: "True"`` queried huggingface.co)."""
    import json
    import socket

    from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, PackageError, _fingerprint, load_package
    from osdic.utils.untrusted import UntrustedFileError

    lookups = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "network cut by the test")

    package = _sodec_package(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    manifest = json.loads((package / CONFIG_FILE).read_text())
    manifest["codec"]["backbone"]["unet_config"] = "someone/model"
    manifest["fingerprint"] = _fingerprint(manifest["codec"], (package / WEIGHTS_FILE).read_bytes()).hex()
    (package / CONFIG_FILE).write_text(json.dumps(manifest))
    with pytest.raises((PackageError, UntrustedFileError), match="unet_config must be dict"):
        load_package(package)
    assert lookups == []


@pytest.mark.parametrize("key, value, message", [
    ("noise_seed", None, "noise_seed must be int, got NoneType"),
    ("w_channels", True, "w_channels must be int, got bool"),
    ("vae_codec.latent_channels", [8], "vae_codec.latent_channels must be int, got list"),
    ("backbone.unet_config.norm_num_groups", True, "unet_config.norm_num_groups: must be int | None, got bool"),
    ("backbone.unet_config.norm_eps", [1, 2], "unet_config.norm_eps: must be float, got list"),
])
def test_a_value_of_the_wrong_type_is_refused_at_load_naming_its_key(tmp_path, key, value, message):
    """Found by the package fuzz: type-confused constructor values loaded and then failed inside
    torch (a list for a norm's eps, a bool for its group count, null for the decoding seed); now
    each constructor argument, and each setting of a diffusers model a package describes, is
    checked against its annotation before anything is built."""
    import json

    from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, PackageError, _fingerprint, load_package
    from osdic.utils.untrusted import UntrustedFileError

    package = _sodec_package(tmp_path)
    manifest = json.loads((package / CONFIG_FILE).read_text())
    *parents, name = key.split(".")
    node = manifest["codec"]
    for parent in parents:
        node = node[parent]
    node[name] = value
    manifest["fingerprint"] = _fingerprint(manifest["codec"], (package / WEIGHTS_FILE).read_bytes()).hex()
    (package / CONFIG_FILE).write_text(json.dumps(manifest))
    with pytest.raises((UntrustedFileError, PackageError), match=message):
        load_package(package)
