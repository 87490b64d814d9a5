"""Every experiment composes, and invalid values stop with an error naming the config key."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf, open_dict

from lightning_modules import MODEL_CONFIG_TARGETS

from tests.conftest import CONF_DIR, TINY_OSDIFF, TINY_SODEC, TINY_STAGE1, compose_config
from train import train
from osdic.checks import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_resolves_and_builds_its_callbacks(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path / "run")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # evaluate.py rebuilds a run's model from its config only through this allow-list
    assert resolved["model"]["_target_"] in MODEL_CONFIG_TARGETS
    assert resolved["callbacks"]["rate_annealing"]["lambda_start"] > 0
    # an experiment that inherits another's schedule values under a new schedule fails here, not hours in
    assert hydra.utils.instantiate(cfg.callbacks.rate_annealing).value() > 0


SWEEPS = sorted(p.stem for p in (Path(CONF_DIR) / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("name", [*[f"experiment={e}" for e in EXPERIMENTS], *[f"sweep={s}" for s in SWEEPS]])
def test_paper_experiments_and_sweeps_train_on_gpus_and_the_demo_on_the_cpu(name, tmp_path):
    """The README's commands must not quietly train Stable Diffusion on a GPU node's CPU."""
    trainer = compose_config([name], tmp_path / "run").trainer
    if name.startswith("experiment=demo"):
        assert (trainer.accelerator, trainer.precision) == ("cpu", "32-true")
    else:
        assert (trainer.accelerator, trainer.precision) == ("gpu", "bf16-mixed")


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_sodec_experiments_weigh_distortion_as_the_reference_code_does(stage, tmp_path):
    """k_M = 1, k_P = 2 are OSEDiff's weights: MSE on images in [-1, 1] and LPIPS-VGG."""
    distortion = compose_config([f"experiment=sodec_stage{stage}"], tmp_path / "run").model.distortion
    assert (distortion.mse_weight, distortion.lpips_weight) == (1.0, 2.0)
    assert (distortion.lpips_net, list(distortion.image_range)) == ("vgg", [-1.0, 1.0])


def test_demo_experiment_builds_its_model(tmp_path):
    cfg = compose_config(["experiment=demo"], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.model)
    assert module.distortion.lpips is None, "the demo trains with k_P = 0 (no weights here)"


@pytest.mark.parametrize(
    "override, key",
    [
        ("callbacks.rate_annealing.lambda_start=0", "callbacks.rate_annealing.lambda_start"),
        ("callbacks.rate_annealing.lambda_start=-1", "callbacks.rate_annealing.lambda_start"),
        ("data.crop_size=100", "data.crop_size"),
        ("+data.train_dirs=[/nonexistent/dataset]", "data.train_dirs"),
        ("model.distortion.lpips_weight=-1", "model.distortion.lpips_weight"),
        ("model/codec/vae_codec@model.codec=hific_tiny", None),
    ],
)
def test_invalid_values_name_their_key(override, key, tmp_path):
    overrides = [o for o in TINY_STAGE1 if not o.startswith("model/codec/vae_codec@model.codec")] + [override]
    if override.startswith("+data.train_dirs"):
        overrides = [*TINY_STAGE1, "data=folder", "data.train_dirs=[/nonexistent/dataset]", "data.val_dirs=null"]
    cfg = compose_config(overrides, tmp_path / "run")
    if key is None:  # control: the tiny config itself is valid and trains
        train(cfg)
        return
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert error.value.key == key
    assert key in str(error.value)


def test_missing_dataset_dir_is_reported_before_training(tmp_path):
    cfg = compose_config([*TINY_STAGE1, "data=lsdir"], tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "no-data-here")
    with pytest.raises(ConfigError, match=r"data\.train_dirs: dataset directory .*no-data-here/LSDIR/train"):
        train(cfg)


STAGE2 = ["model=sodec_stage2", *TINY_SODEC]
INVALID = [
    (TINY_STAGE1, "trainer.val_check_interval=0", "trainer.val_check_interval"),  # was ZeroDivisionError in fit
    (TINY_STAGE1, "trainer.val_check_interval=1.5", "trainer.val_check_interval"),
    (TINY_STAGE1, "trainer.val_check_interval=0.5", "trainer.val_check_interval"),  # no check_val_every_n_epoch
    (TINY_STAGE1, "trainer.precision=16-mixed", "trainer.precision"),  # Lightning made it bf16 on a CPU
    (TINY_STAGE1, "seed=abc", "seed"),
    (TINY_STAGE1, "seed=-1", "seed"),  # was numpy's raw ValueError in seed_everything
    (TINY_STAGE1, "trainer.val_check_interval=5", "trainer.val_check_interval"),  # > max_steps (4): no validation
    (TINY_STAGE1, "data.num_workers=-1", "data.num_workers"),
    (TINY_STAGE1, "model.optimizer.lr=-1", "model.optimizer.lr"),
    (TINY_STAGE1, "model.aux_optimizer.lr=0", "model.aux_optimizer.lr"),
    (STAGE2, "model.codec.backbone.lora_rank=abc", "model.codec.backbone.lora_rank"),
    (STAGE2, "model.codec.timestep=1000", "model.codec.timestep"),
    (TINY_OSDIFF, "model.codec.timestep=1000", "model.codec.timestep"),
    (TINY_OSDIFF, "model.codec.entropy_model.groups=[2,2]", "model.codec.entropy_model.groups"),  # ≠ latent width
    (TINY_OSDIFF, "model.codec.control.width_ratio=0", "model.codec.control.width_ratio"),
]


@pytest.mark.parametrize("base, override, key", INVALID, ids=[override for _, override, _ in INVALID])
def test_invalid_values_stop_before_training_naming_the_full_key(base, override, key, tmp_path, monkeypatch):
    fits = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: fits.append(args))
    cfg = compose_config([*base, override], tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert error.value.key == key, str(error.value)
    assert str(error.value).startswith(f"{key}: ")
    assert not fits and not (tmp_path / "run" / "checkpoints").exists()


CONTINUING = ["experiment=sodec_stage2", "experiment=sodec_stage3", "experiment=sodec_stage4", "experiment=demo_stage2",
              "experiment=demo_stage3", "sweep=stage3_lambda"]


@pytest.mark.parametrize("name", CONTINUING)
def test_a_stage_that_continues_another_refuses_to_start_without_it(name, tmp_path, monkeypatch):
    """Stages 2–4 without model.init_from would train from random weights: the run stops naming
    the key and the command that makes the predecessor, before anything is built or read."""
    built = []
    monkeypatch.setattr(hydra.utils, "instantiate", lambda *args, **kwargs: built.append(args))
    cfg = compose_config([name], tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert error.value.key == "model.init_from"
    assert f"python train.py experiment={cfg.model.predecessor_stage}" in str(error.value)
    assert not built and not (tmp_path / "run").exists()


def test_init_from_a_checkpoint_that_does_not_exist_is_refused_before_training(tmp_path):
    cfg = compose_config(["experiment=sodec_stage3", "model.init_from=/no/such/stage2.ckpt"], tmp_path / "run")
    with pytest.raises(ConfigError, match="model.init_from: /no/such/stage2.ckpt does not exist"):
        train(cfg)


def test_the_library_imports_nothing_of_the_training_side():
    """osdic imports neither Lightning, Hydra nor OmegaConf, nor the application's packages, with no
    exception tolerated (bench/import_graph.py)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(Path(CONF_DIR).parent / "bench" / "import_graph.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "library → training side: none" in result.stdout, result.stdout[-2000:]
