"""Shared fixtures: Hydra configs composed on tiny models, Kodak images, the CPU environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

import train
from training.run import CONF_DIR as _CONF_DIR, compose_run_config

CONF_DIR = str(_CONF_DIR)
KODAK_DIR = Path(os.environ.get("KODAK_DIR", Path(train.__file__).resolve().parent.parent / "shared" / "data" / "kodak"))

#: a run small enough for a test: 64² crops, a few steps, on the CPU, no LPIPS weights, no logger.
_TINY_RUN = [
    "trainer=cpu",
    "model.val_metrics=[psnr]",
    "data.crop_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "debug=fast",
    "logger=none",
]
#: stage 1 on a tiny HiFiC.
TINY_STAGE1 = ["model/codec/vae_codec@model.codec=hific_tiny", "model.distortion.lpips_weight=0", *_TINY_RUN]


def pytest_collection_modifyitems(config, items):
    """The slow tests first, otherwise in collection order: `make test`'s two xdist workers take
    them in turns and end together, instead of one waiting minutes on a long test collected last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True, scope="session")
def _offline_environment(tmp_path_factory):
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["HF_HUB_OFFLINE"] = "1"
    # xdist workers share the cores: two threads each on a 2-core machine spin against each other
    # (tiny models gain nothing from a second thread); subprocesses (train.py, DDP ranks) inherit it
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose like ``python train.py <overrides>`` would, with this test's output dir."""
    return compose_run_config(overrides, output_dir, config_name)


@pytest.fixture
def tiny_stage1_cfg(tmp_path) -> DictConfig:
    return compose_config(TINY_STAGE1, tmp_path / "run")


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    if not (KODAK_DIR / "kodim01.png").is_file():
        pytest.skip(f"Kodak images not found at {KODAK_DIR} (set KODAK_DIR)")
    return KODAK_DIR

#: SODEC stages 2/3 at test size: tiny HiFiC, tiny SD-class backbone, tiny ViT for the FGM, from
#: random weights (a test that needs a trained predecessor sets model.init_from itself).
TINY_SODEC = [
    "model.init_from=random",
    "model/codec/vae_codec=hific_tiny",
    "model/codec/backbone=tiny",
    "model/codec/guidance=fgm_tiny",
    "model.codec.w_channels=8",
    "model.codec.transform_width=16",
    "model.codec.transform_blocks=1",
    "model.distortion.lpips_weight=0",
    *_TINY_RUN,
]

#: SODEC's final stage at test size.
TINY_STAGE4 = ["model=sodec_stage4", *TINY_SODEC, "model/adversary/discriminator=latent_tiny"]

#: OSDiff at test size.
TINY_OSDIFF = [
    "model=osdiff",
    "model/codec/backbone=tiny",
    "model.codec.backbone.lora_rank=null",
    "model/adversary/discriminator=unet_features_tiny",
    "model/codec/guidance@model.codec.context=text_tiny",
    "model/codec/entropy_model=elic_tiny",
    "model.codec.latent_channels=8",
    "model.codec.residual_blocks=1",
    *_TINY_RUN,
]
