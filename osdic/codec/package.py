"""Exported codec packages: ``weights.safetensors`` + ``codec.json``.

A package is what ``compress``, ``decompress`` and evaluation load. ``codec.json`` holds the
instantiation config of the codec (``_target_`` + its constructor arguments; a pretrained
backbone is named by id/path with its LoRA rank and targets, never stored) and the package's
fingerprint, which every file it writes repeats in its header, and the training stage that
produced it (``stage``: a label, outside the fingerprint, as it changes nothing that is decoded).
The fingerprint tells packages apart; it is no signature, so ``codec.json`` may only name the
classes of :data:`CODEC_CLASSES`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save
from torch import nn

from osdic.codec.bitstream import FINGERPRINT_BYTES
from osdic.utils.files import write_atomically
from osdic.utils.modules import load_portable_state_dict, module_config, portable_state_dict
from osdic.utils.untrusted import build

CONFIG_FILE = "codec.json"
WEIGHTS_FILE = "weights.safetensors"
PACKAGE_FORMAT = 1
#: What a package's config may build: the codecs and the modules their constructors take.
CODEC_CLASSES = frozenset({
    "osdic.models.hific.HiFiCCompressor",
    "osdic.models.sodec.SODEC",
    "osdic.models.osdiff.OSDiff",
    "osdic.models.osdiff.PureNoise",
    "osdic.models.osdiff.NoisedCondition",
    "osdic.models.osdiff.NoisedClean",
    "osdic.models.entropy.MeanScaleHyperprior",
    "osdic.models.entropy.ElicEntropyModel",
    "osdic.models.control.ControlNetXS",
    "osdic.models.control.FullControlNet",
    "osdic.models.backbone.DiffusionBackbone",
    "osdic.models.guidance.NullGuidance",
    "osdic.models.guidance.TextGuidance",
    "osdic.models.guidance.CaptionGuidance",
    "osdic.models.guidance.ImageCaptioner",
    "osdic.models.guidance.ColourCaptioner",
    "osdic.models.guidance.HyperpriorGuidance",
    "osdic.models.guidance.FidelityGuidance",
    "osdic.models.guidance.VisionEncoder",
})


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


def package_warnings(directory: str | os.PathLike) -> list[str]:
    """What the package's producer asked every evaluation of it to repeat (``warnings`` in
    ``codec.json``; none for packages written before it existed)."""
    manifest = json.loads((Path(directory) / CONFIG_FILE).read_text())
    return [str(w) for w in manifest.get("warnings") or []] if isinstance(manifest, dict) else []


def load_package(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, bytes]:
    """Load a package → (codec in eval mode, fingerprint)."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not a codec package (see `export`)")
    manifest = json.loads(config_path.read_text())
    if manifest.get("format") != PACKAGE_FORMAT:
        raise ValueError(f"{config_path}: unsupported package format {manifest.get('format')!r}")
    fingerprint = _fingerprint(manifest["codec"], weights_path.read_bytes())
    if fingerprint.hex() != manifest["fingerprint"]:
        raise ValueError(f"{directory}: weights do not match the fingerprint in {CONFIG_FILE} "
                         "(modified package, or an interrupted export: export it again)")
    codec = build(manifest["codec"], CODEC_CLASSES, str(config_path))
    load_portable_state_dict(codec, load_file(str(weights_path)), str(weights_path))
    return codec.to(device).eval(), fingerprint
