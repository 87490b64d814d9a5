"""Checkpoints, codec packages and run configs from elsewhere are data: a file crafted to run
code on load is refused with a clear error, and the code never runs (its marker file is never
written). The payloads are the ones of the issue: a pickled ``__reduce__``, and ``codec.json``
targets that unpickle (pandas, numpy, torch) or import code (torch.hub), the fingerprint
recomputed as an attacker would."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import evaluate as evaluate_module
from osdic.codec.cli import decompress_main
from osdic.codec.image_codec import compress_image
from osdic.codec.package import CONFIG_FILE, WEIGHTS_FILE, _fingerprint, export_package, load_package
from osdic.models.hific import HiFiCCompressor
from osdic.registry import CODEC, registered
from tests.conftest import TINY_SODEC, TINY_STAGE1, compose_config
from train import train
from osdic.utils.modules import module_config
from osdic.utils.untrusted import UntrustedFileError, check_targets

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


class _WritesMarker:
    """Unpickling this writes ``marker``: the shape of any pickle payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _payloads(folder: Path, marker: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"pickle": folder / "evil.pkl", "npy": folder / "evil.npy", "ckpt": folder / "evil.ckpt", "hub": folder / "hub"}
    files["pickle"].write_bytes(pickle.dumps(_WritesMarker(marker)))
    np.save(files["npy"], np.array([_WritesMarker(marker)], dtype=object), allow_pickle=True)
    torch.save({"state_dict": {}, "payload": _WritesMarker(marker)}, files["ckpt"])
    files["hub"].mkdir()
    (files["hub"] / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return files


def _nested(files: dict[str, Path], marker: Path) -> dict[str, dict]:
    """Constructor arguments that run the payload when a Hydra-style loader builds them."""
    return {
        "pandas.read_pickle": {"_target_": "pandas.read_pickle", "filepath_or_buffer": str(files["pickle"])},
        "numpy.load": {"_target_": "numpy.load", "file": str(files["npy"]), "allow_pickle": True},
        "torch.hub.load": {"_target_": "torch.hub.load", "repo_or_dir": str(files["hub"]), "model": "m",
                           "source": "local", "trust_repo": True},
        "torch.load": {"_target_": "torch.load", "f": str(files["ckpt"]), "weights_only": False},
    }


def test_control_each_payload_runs_code_when_loaded_the_unsafe_way(tmp_path):
    """Without this, 'the marker was never written' below could hold for a payload that does nothing."""
    loaders = {
        "pickle": lambda f: pd.read_pickle(f),
        "npy": lambda f: np.load(f, allow_pickle=True),
        "ckpt": lambda f: torch.load(f, weights_only=False),
        "hub": lambda f: torch.hub.load(str(f), "m", source="local", trust_repo=True),
    }
    for kind, load in loaders.items():
        marker = tmp_path / f"marker-{kind}"
        files = _payloads(tmp_path / kind, marker)
        try:
            load(files[kind])
        except Exception:  # the hub payload has no entry point; its code has run by then
            pass
        assert marker.exists(), kind


# ------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    """A finished tiny stage-1 run with its run config where train.py's Hydra puts it."""
    out = tmp_path_factory.mktemp("stage1") / "run"
    cfg = compose_config(TINY_STAGE1, out)
    _, trainer = train(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    return out, trainer.lightning_module


def test_init_from_refuses_a_checkpoint_that_runs_code(tmp_path):
    marker = tmp_path / "marker"
    files = _payloads(tmp_path / "payloads", marker)
    cfg = compose_config([*TINY_STAGE1, f"+model.init_from={files['ckpt']}"], tmp_path / "run")
    with pytest.raises(UntrustedFileError, match="evil.ckpt: refused"):
        train(cfg)
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_refuses_a_checkpoint_that_runs_code_even_where_torch_is_told_to_trust_files(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (and torch < 2.6) make an unset ``weights_only`` unpickle anything."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    files = _payloads(tmp_path / "payloads", marker)
    cfg = compose_config([*TINY_STAGE1, f"ckpt_path={files['ckpt']}"], tmp_path / "run")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train(cfg)
    assert not marker.exists()


def test_evaluate_builds_a_codec_from_a_run_checkpoint(stage1_run):
    out, module = stage1_run
    codec, fingerprint = evaluate_module.load_codec(str(out / "checkpoints" / "last.ckpt"))
    trained = module.codec.state_dict()
    assert len(fingerprint) == 8
    assert all(torch.equal(value, trained[key]) for key, value in codec.state_dict().items())


def test_evaluate_refuses_a_checkpoint_that_runs_code(stage1_run, tmp_path):
    out, _ = stage1_run
    marker = tmp_path / "marker"
    files = _payloads(tmp_path / "payloads", marker)
    run = tmp_path / "run"
    shutil.copytree(out / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    shutil.copy(files["ckpt"], run / "checkpoints" / "last.ckpt")
    with pytest.raises(UntrustedFileError, match=r"last.ckpt: refused.*it asks for exec"):
        evaluate_module.load_codec(str(run / "checkpoints" / "last.ckpt"))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["pandas.read_pickle", "numpy.load", "torch.hub.load", "torch.load"])
def test_evaluate_refuses_a_run_config_that_runs_code(stage1_run, tmp_path, target):
    out, _ = stage1_run
    marker = tmp_path / "marker"
    files = _payloads(tmp_path / "payloads", marker)
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoints", run / "checkpoints")
    config = OmegaConf.load(out / ".hydra" / "config.yaml")
    config.model.distortion = _nested(files, marker)[target]
    (run / ".hydra").mkdir()
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    with pytest.raises(UntrustedFileError, match=f"refused _target_ '{target}' at distortion"):
        evaluate_module.load_codec(str(run / "checkpoints" / "last.ckpt"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------- packages
@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    torch.manual_seed(0)
    return export_package(HiFiCCompressor(**TINY).eval(), tmp_path_factory.mktemp("pkg") / "codec")


def _tampered(package_dir: Path, folder: Path, edit) -> Path:
    """A copy of the package with ``edit`` applied to codec.json and the fingerprint recomputed."""
    tampered = folder / "codec"
    shutil.copytree(package_dir, tampered)
    manifest = json.loads((tampered / CONFIG_FILE).read_text())
    edit(manifest["codec"])
    manifest["fingerprint"] = _fingerprint(manifest["codec"], (tampered / WEIGHTS_FILE).read_bytes()).hex()
    (tampered / CONFIG_FILE).write_text(json.dumps(manifest))
    return tampered


def _edits(files: dict[str, Path], marker: Path) -> dict[str, tuple]:
    """(edit of codec.json, what the error names): nested targets, a target inside Hydra's
    positional ``_args_``, and the top-level target replaced."""
    nested = _nested(files, marker)
    edits = {name: (lambda c, n=node: c.update(residual_blocks=n), f"'{name}' at residual_blocks")
             for name, node in nested.items()}
    edits["_args_"] = (lambda c: c.update(_args_=[nested["pandas.read_pickle"]]), "'pandas.read_pickle' at _args_[0]")
    edits["os.system"] = (lambda c: (c.clear(), c.update({"_target_": "os.system", "command": f"touch {marker}"})),
                          "'os.system' at the top level")
    return edits


EDITS = ["pandas.read_pickle", "numpy.load", "torch.hub.load", "torch.load", "_args_", "os.system"]


@pytest.mark.parametrize("edit", EDITS)
def test_load_package_refuses_a_codec_json_that_runs_code(package_dir, tmp_path, edit):
    marker = tmp_path / "marker"
    change, named = _edits(_payloads(tmp_path / "payloads", marker), marker)[edit]
    tampered = _tampered(package_dir, tmp_path, change)
    with pytest.raises(UntrustedFileError, match=re.escape(f"codec.json: refused _target_ {named}")):
        load_package(tampered)
    assert not marker.exists()


@pytest.mark.parametrize("edit", EDITS)
def test_decompress_refuses_a_package_that_runs_code(package_dir, tmp_path, capsys, edit):
    marker = tmp_path / "marker"
    change, named = _edits(_payloads(tmp_path / "payloads", marker), marker)[edit]
    tampered = _tampered(package_dir, tmp_path, change)
    codec, fingerprint = load_package(package_dir)
    (tmp_path / "photo.osdc").write_bytes(compress_image(codec, fingerprint, torch.rand(3, 64, 64)))
    out = tmp_path / "decoded.png"
    assert decompress_main(["--codec", str(tampered), str(tmp_path / "photo.osdc"), "-o", str(out)]) == 2
    assert f"refused _target_ {named}" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_hydra_keys_of_an_allowed_class_are_refused_in_a_package(package_dir, tmp_path):
    tampered = _tampered(package_dir, tmp_path, lambda c: c.update(_partial_=True))
    with pytest.raises(UntrustedFileError, match=r"refused \['_partial_'\] at the top level"):
        load_package(tampered)


@pytest.mark.parametrize("guidance", ["none", "text_tiny", "text_caption_tiny", "hyperprior_tiny", "fgm_tiny"])
def test_every_codec_the_configs_build_exports_only_allowed_classes(tmp_path, guidance):
    """A codec class not registered as a codec part would export packages that nothing can load."""
    cfg = compose_config(["model=sodec_stage2", *TINY_SODEC, f"model/codec/guidance={guidance}"], tmp_path / "run")
    codec = hydra.utils.instantiate(cfg.model).codec
    check_targets(module_config(codec), registered(CODEC), "export")


def test_evaluate_refuses_a_run_config_that_is_a_yaml_alias_bomb(stage1_run, tmp_path):
    """Ten levels of ten aliases each: 10¹⁰ nodes once expanded, from a file of a kilobyte."""
    out, _ = stage1_run
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoints", run / "checkpoints")
    (run / ".hydra").mkdir()
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    (run / ".hydra" / "config.yaml").write_text("\n".join([*lines, "model: *a9"]) + "\n")
    start = time.perf_counter()
    with pytest.raises(UntrustedFileError, match="anchors and aliases"):
        evaluate_module.load_codec(str(run / "checkpoints" / "last.ckpt"))
    assert time.perf_counter() - start < 5
