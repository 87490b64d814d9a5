"""Exported codec packages: ``weights.safetensors`` + ``codec.json``.

A package is what ``compress``, ``decompress`` and evaluation load. ``codec.json`` holds the
instantiation config of the codec (``_target_`` + its constructor arguments; a pretrained
backbone is named by id/path with its LoRA rank and targets, never stored) and the package's
fingerprint, which every file it writes repeats in its header, and the training stage that
produced it (``stage``: a label, outside the fingerprint, as it changes nothing that is decoded).
The fingerprint tells packages apart; it is no signature, so ``codec.json`` may only name the
classes registered as codec parts (``osdic.registry.register(CODEC)``, where each is defined:
only code already imported can register a class, never a file).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from osdic.checks import MissingWeightsError
from osdic.codec.bitstream import FINGERPRINT_BYTES
from osdic.codec.entropy_guard import TABLE_BUFFERS, EntropyTableError, rebuild_entropy_tables
from osdic.models import backbone, control, entropy, guidance, hific, osdiff, sodec  # noqa: F401  (registers them)
from osdic.registry import CODEC, registered
from osdic.utils.files import write_atomically
from osdic.utils.modules import architecture_only, load_portable_state_dict, module_config, portable_state_dict
from osdic.utils.untrusted import UntrustedFileError, build

CONFIG_FILE = "codec.json"
WEIGHTS_FILE = "weights.safetensors"
PACKAGE_FORMAT = 1


def _fingerprint(config: dict, weights: bytes) -> bytes:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(weights)
    return digest.digest()[:FINGERPRINT_BYTES]


def export_package(codec: nn.Module, directory: str | os.PathLike, stage: str | None = None,
                   warnings: Sequence[str] = ()) -> Path:
    """Write ``codec`` (after refreshing its entropy-coder tables) as a package directory;
    ``stage`` names the training stage that produced it (None: not trained by a stage) and
    ``warnings`` what every evaluation of it must repeat (it descends from random weights, say).

    Each file is replaced atomically, so a failed export (a full disk) leaves the previous
    package loadable; an export killed between the two renames leaves weights that do not match
    the fingerprint, which loading reports."""
    directory = Path(directory)
    codec.update(force=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in portable_state_dict(codec).items()}
    weights = save(state)
    config = module_config(codec)
    manifest = {"format": PACKAGE_FORMAT, "codec": config, "fingerprint": _fingerprint(config, weights).hex(),
                "stage": stage, "warnings": list(warnings)}
    write_atomically(directory / WEIGHTS_FILE, weights)
    write_atomically(directory / CONFIG_FILE, json.dumps(manifest, indent=2).encode())
    return directory


class PackageError(ValueError):
    """A codec package that cannot be used; the message is one line saying why."""


#: what ``codec.json`` may hold, checked before anything is built from it: its size, its nesting,
#: every number and list. Sizes of the modules it builds are then checked against the weights
#: file before anything is allocated (:func:`load_package`).
MAX_MANIFEST_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_INT = 4096   # SD 2.1's widest layer has 1280 channels, HiFiC's 960
MAX_LIST = 4096
#: integers that are not sizes (a seed may be any 64-bit value); every other one is a size, a count
#: or an index, never negative
UNBOUNDED_INTS = ("noise_seed",)


def _check_values(value, key: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise PackageError(f"{CONFIG_FILE}: nested deeper than {MAX_DEPTH} levels at {key}")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_values(item, f"{key}.{name}" if key else str(name), depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise PackageError(f"{CONFIG_FILE}: {key} holds {len(value)} items (at most {MAX_LIST})")
        for index, item in enumerate(value):
            _check_values(item, f"{key}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        bound = 1 << 63 if key.rsplit(".", 1)[-1] in UNBOUNDED_INTS else MAX_INT
        if not 0 <= value <= bound:
            raise PackageError(f"{CONFIG_FILE}: {key} = {value} is out of range (0 to {bound})")
    elif isinstance(value, float) and value != value:
        raise PackageError(f"{CONFIG_FILE}: {key} is NaN")


def read_manifest(directory: str | os.PathLike) -> dict:
    """``codec.json`` as data, its structure and values checked; a :class:`PackageError` otherwise."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PackageError(f"{path} not found: {directory} is not a codec package (see `export`)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{path} is {path.stat().st_size} bytes: a package's config is at most {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # invalid JSON, bad UTF-8, nesting beyond the parser
        raise PackageError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{path}: unsupported package format {str(manifest.get('format'))[:40]!r}")
    for key, kind in [("codec", dict), ("fingerprint", str)]:
        if not isinstance(manifest.get(key), kind):
            raise PackageError(f"{path}: '{key}' must be a JSON {kind.__name__}")
    if not all(isinstance(w, str) for w in manifest.get("warnings") or []):
        raise PackageError(f"{path}: 'warnings' must be a list of strings")
    _check_values(manifest["codec"], "codec")
    return manifest


def package_warnings(directory: str | os.PathLike) -> list[str]:
    """What the package's producer asked every evaluation of it to repeat (``warnings`` in
    ``codec.json``; none for packages written before it existed)."""
    return list(read_manifest(directory).get("warnings") or [])


def _is_table(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in TABLE_BUFFERS


def _check_sizes(config: dict, weights_path: Path, where: str) -> None:
    """The sizes ``config`` builds (on the meta device, pretrained parts from their configs: nothing
    allocated) against the tensors the weights file holds, before anything real is built."""
    try:
        with architecture_only():
            skeleton = build(config, registered(CODEC), where)
    except (UntrustedFileError, MissingWeightsError):
        raise
    except Exception as exc:  # noqa: BLE001 — a constructor given hostile values can raise anything
        raise PackageError(f"{where}: cannot build the codec it describes ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]})") from None
    expected = {k: tuple(v.shape) for k, v in portable_state_dict(skeleton).items() if not _is_table(k)}
    try:
        with safe_open(str(weights_path), "pt") as weights:
            stored = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys() if not _is_table(k)}
    except Exception as exc:  # noqa: BLE001 — safetensors reports a malformed header in several ways
        raise PackageError(f"{weights_path}: not a readable safetensors file ({type(exc).__name__})") from None
    differing = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    if differing or missing or unexpected:
        detail = (f"{differing[0]}: {CONFIG_FILE} builds {expected[differing[0]]}, the weights hold "
                  f"{stored[differing[0]]}" if differing else f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        raise PackageError(f"{where}: the weights do not fit the codec {CONFIG_FILE} describes ({detail})")


def load_package(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, bytes]:
    """Load a package → (codec in eval mode, fingerprint).

    The package is data, checked before use: ``codec.json``'s structure and values, its classes
    (only registered codec parts), the fingerprint, the sizes it builds against the weights file
    (before anything is allocated), every stored tensor finite; the entropy coder's tables are
    rebuilt from the model's own parameters, never read from the file. Pretrained parts it names
    load from local files only, never running a model's own code. Raises :class:`PackageError`
    (or ``UntrustedFileError``, ``MissingWeightsError``) with one line saying why."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    manifest = read_manifest(directory)
    if not weights_path.is_file():
        raise PackageError(f"{weights_path} not found: {directory} is not a codec package (see `export`)")
    fingerprint = _fingerprint(manifest["codec"], weights_path.read_bytes())
    if fingerprint.hex() != manifest["fingerprint"]:
        raise PackageError(f"{directory}: weights do not match the fingerprint in {CONFIG_FILE} "
                           "(modified package, or an interrupted export: export it again)")
    _check_sizes(manifest["codec"], weights_path, str(config_path))
    codec = build(manifest["codec"], registered(CODEC), str(config_path))
    state = load_file(str(weights_path))
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise PackageError(f"{weights_path}: {bad} holds values that are not finite")
    # the file's coding tables are never used: the codec's own (empty) ones go in, rebuilt below
    state.update({k: v for k, v in codec.state_dict().items() if _is_table(k)})
    try:
        load_portable_state_dict(codec, state, str(weights_path))
        rebuild_entropy_tables(codec, lambda: codec.update(force=True))
    except (KeyError, RuntimeError, EntropyTableError) as exc:
        raise PackageError(f"{directory}: {str(exc).splitlines()[0][:300]}") from None
    return codec.to(device).eval(), fingerprint
