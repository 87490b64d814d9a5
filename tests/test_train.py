"""Stage 1 through train(): checkpoints, the exported codec, W&B offline, DDP on CPU."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import train as train_module
from osdic.checks import ConfigError
from osdic.codec.package import load_package
from training.config import TargetRateMissed
from tests.conftest import KODAK_DIR, TINY_STAGE1, compose_config
from train import train

REPO = Path(train_module.__file__).resolve().parent


def _inspect(run_root: Path, *flags: str) -> str:
    run_dir = next((run_root / "wandb").glob("offline-run-*"))
    return subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", *flags, "--json", str(run_dir)],
                          capture_output=True, text=True, check=True, cwd=run_root).stdout


def _wandb_summary(run_root: Path) -> dict:
    return json.loads(_inspect(run_root, "--summary"))


def _wandb_records(run_root: Path) -> list[dict]:
    return [json.loads(line) for line in _inspect(run_root).splitlines() if line.strip()]


def _wandb_run_record(run_root: Path) -> dict:
    return next(r["run"] for r in _wandb_records(run_root) if r["type"] == "run")


def test_stage1_fit_logs_to_wandb_offline_and_exports_a_codec(tmp_path):
    """The paper's loss (k_P > 0, LPIPS on a random backbone since no weights exist here),
    every logged key read back from the offline W&B run, and a working codec package."""
    out = tmp_path / "run"
    cfg = compose_config(
        [
            *[o for o in TINY_STAGE1 if not o.startswith(("logger", "model.val_metrics", "model.distortion"))],
            "logger=wandb",
            "allow_random_weights=true",
            "model.val_metrics=[psnr,ms_ssim,lpips_alex]",
        ],
        out,
    )
    metrics, trainer = train(cfg)
    assert trainer.global_step == 4

    summary = _wandb_summary(out)["summary"]
    for key in ["train/loss", "train/bpp", "train/mse", "train/lpips", "train/lambda", "val/bpp", "val/bpp_real",
                "val/psnr", "val/ms_ssim", "val/lpips_alex", "val/loss", "data/skipped_images"]:
        assert key in summary, (key, sorted(summary))
    assert summary["train/lambda"] == pytest.approx(1.0)
    record = _wandb_run_record(out)
    assert record["display_name"].startswith("train ") and "debug=fast" in record["tags"], "stage first; a smoke test"
    assert summary["val/psnr"] == pytest.approx(metrics["val/psnr"]), "the last validation's, like val/bpp_real"
    artifact = next(r["artifact"] for r in _wandb_records(out) if r.get("type") == "artifact")
    assert artifact["type"] == "codec" and json.loads(artifact["metadata"])["stage"] == "sodec_stage1"
    run_files = next((out / "wandb").glob("offline-run-*")) / "files"
    assert (run_files / "provenance" / "git.txt").is_file() and not (run_files / "provenance" / "git.txt").is_symlink()

    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(".lpips." in key for key in checkpoint["state_dict"]), "frozen LPIPS weights not checkpointed"
    assert any(key.startswith("codec.") for key in checkpoint["state_dict"])
    assert len(checkpoint["optimizer_states"]) == 2  # main + aux
    assert checkpoint["stage"] == "sodec_stage1"
    assert json.loads((out / "codec" / "codec.json").read_text())["stage"] == "sodec_stage1"

    codec, fingerprint = load_package(out / "codec")
    assert len(fingerprint) == 8 and not codec.training


def test_returns_the_optimized_metric_for_sweeps(tiny_stage1_cfg):
    metrics, _ = train(tiny_stage1_cfg)
    assert train_module.metric_for_sweep(tiny_stage1_cfg, metrics) == metrics["val/loss"]


def test_a_sweep_at_a_fixed_rate_does_not_score_a_run_that_missed_it():
    """With ``score_only_at_target_bpp`` a run whose λ controller ended outside its tolerance
    raises (Optuna records a failed trial) instead of scoring quality measured at another rate."""
    cfg = OmegaConf.create({"optimized_metric": "val/psnr", "score_only_at_target_bpp": True})
    landed = {"val/psnr": 30.0, "val/bpp_target_error": -0.029, "val/bpp_target_tolerance": 0.03}
    assert train_module.metric_for_sweep(cfg, landed) == 30.0
    with pytest.raises(TargetRateMissed, match=r"-12\.0 %.*val/psnr = 31"):
        train_module.metric_for_sweep(cfg, {**landed, "val/psnr": 31.0, "val/bpp_target_error": -0.12})
    with pytest.raises(ConfigError, match="score_only_at_target_bpp"):  # no controller: nothing says it landed
        train_module.metric_for_sweep(cfg, {"val/psnr": 30.0})
    cfg.score_only_at_target_bpp = False  # a plain run scores whatever its rate
    assert train_module.metric_for_sweep(cfg, {**landed, "val/bpp_target_error": -0.12}) == 30.0


def test_a_sweep_at_a_fixed_rate_without_the_lambda_controller_is_refused_before_training(tmp_path):
    from training.config import check_train_config

    with pytest.raises(ConfigError, match="score_only_at_target_bpp.*ConstantLambda"):
        check_train_config(compose_config([*TINY_STAGE1, "score_only_at_target_bpp=true"], tmp_path / "run"))
    check_train_config(compose_config([*TINY_STAGE1, "score_only_at_target_bpp=true",
                                       "callbacks/rate_annealing=target_bpp"], tmp_path / "run"))


def test_validation_before_training_records_where_the_stage_starts(tmp_path):
    """initial_metrics.json beside final_metrics.json, and the validations inside fit() (the
    sanity check included) still run after the first one ran under inference mode."""
    cfg = compose_config([*TINY_STAGE1, "validate_before_training=true", "trainer.num_sanity_val_steps=1"],
                         tmp_path / "run")
    train(cfg)
    initial = json.loads((tmp_path / "run" / "initial_metrics.json").read_text())
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert {"val/psnr", "val/bpp_real"} <= initial.keys() & final.keys()
    assert initial["val/psnr"] != final["val/psnr"]


def test_validation_before_training_with_validation_off_just_trains(tmp_path):
    cfg = compose_config([*TINY_STAGE1, "validate_before_training=true", "data=folder", f"data.train_dirs=[{KODAK_DIR}]",
                          "data.val_dirs=null", "trainer.limit_val_batches=0"], tmp_path / "run")
    metrics, _ = train(cfg)
    assert "train/loss" in metrics and not (tmp_path / "run" / "initial_metrics.json").exists()


def test_progress_bar_shows_the_steps_toward_max_steps_with_lambda_bpp_and_loss(tiny_stage1_cfg):
    from callbacks.progress import StepProgressBar

    tiny_stage1_cfg.data.batch_size = 4  # 2 batches an epoch: the 4 steps span epochs
    _, trainer = train(tiny_stage1_cfg)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, StepProgressBar) and trainer.current_epoch >= 1
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (4, trainer.max_steps) == (4, 4)
    shown = dict(item.split("=") for item in bar.train_progress_bar.postfix.split(", "))
    assert shown == {"λ": "1", "bpp": f"{float(trainer.callback_metrics['train/bpp']):.4g}",
                     "loss": f"{float(trainer.callback_metrics['train/loss']):.4g}"}


def test_wandb_run_is_closed_when_training_fails(tmp_path, monkeypatch):
    import wandb

    cfg = compose_config([*[o for o in TINY_STAGE1 if o != "logger=none"], "logger=wandb"], tmp_path / "run")
    monkeypatch.setattr("lightning_modules.stage1_vae.Stage1VAEModule.compute_losses",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    assert wandb.run is None


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tmp_path):
    """`trainer=ddp_cpu`: Lightning re-launches train.py for rank 1 under the same Hydra run dir."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *TINY_STAGE1, "trainer=ddp_cpu", "logger=csv",
         f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/bpp_real" in metrics and "train/lambda" in metrics


@pytest.mark.parametrize("schedule", ["cosine", "hold_cosine"])
def test_a_partial_scheduler_steps_every_training_batch(tmp_path, schedule):
    cfg = compose_config([*TINY_STAGE1, f"model/scheduler={schedule}", "trainer.max_steps=4"], tmp_path / "run")
    _, trainer = train(cfg)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 4, "stepped once per batch"
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12), "the decay reached eta_min at max_steps"


def test_validation_on_images_under_the_ms_ssim_minimum_warns_once_and_keeps_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    for folder, sizes in [("train", [(96, 96)] * 4), ("val", [(64, 96), (192, 192)])]:
        (tmp_path / folder).mkdir()
        for i, size in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    cfg = compose_config([*TINY_STAGE1, "data=folder", f"data.train_dirs=[{tmp_path / 'train'}]",
                          f"data.val_dirs=[{tmp_path / 'val'}]", "data.pin_memory=false", "model.val_metrics=[psnr,ms_ssim]",
                          "trainer.limit_val_batches=2"], tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, _ = train(cfg)  # validates twice
    skipped = [w for w in caught if "val/ms_ssim leaves out" in str(w.message)]
    assert len(skipped) == 1 and "64×96" in str(skipped[0].message)
    assert 0 < metrics["val/ms_ssim"] <= 1, "the mean over the image large enough"
    assert math.isfinite(metrics["val/psnr"])


def test_hold_then_cosine_holds_the_learning_rate_then_decays_it_to_eta_min_and_resumes():
    """The first ``hold_fraction`` of the run at the initial rate, a cosine to ``eta_min`` at
    ``total_steps``; a scheduler restored from its state_dict continues the same curve."""
    from osdic.utils.optim import HoldThenCosineLR

    def schedule():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        return optimizer, HoldThenCosineLR(optimizer, total_steps=10, hold_fraction=0.4, eta_min=0.1)

    optimizer, scheduler = schedule()
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == [2.0] * 5
    assert rates[7] == pytest.approx(0.1 + 1.9 * (1 + math.cos(math.pi * 0.5)) / 2)
    assert rates[10:] == [pytest.approx(0.1)] * 2
    assert all(a > b for a, b in zip(rates[4:10], rates[5:11]))
    _, resumed = schedule()
    resumed.load_state_dict({**scheduler.state_dict(), "last_epoch": 7})
    resumed.step()
    assert resumed.get_last_lr()[0] == pytest.approx(rates[8])
    with pytest.raises(ConfigError, match="hold_fraction"):
        HoldThenCosineLR(optimizer, total_steps=10, hold_fraction=1.0)


def test_entropy_model_lr_gives_the_entropy_models_networks_their_own_learning_rate(tmp_path):
    """Two groups in the main optimizer: every other trainable parameter at optimizer.lr, the
    entropy model's networks (not the quantiles, which the aux optimizer trains) at entropy_model_lr;
    without it one group, as before."""
    from osdic.models.entropy import ENTROPY_MODELS
    from training.config import instantiate_node

    def main_optimizer(*overrides):
        module = instantiate_node(compose_config([*TINY_STAGE1, *overrides], tmp_path / "run").model, "model")
        return module, module.configure_optimizers()[0]

    module, optimizer = main_optimizer("model.optimizer.lr=2e-4", "model.entropy_model_lr=5e-3")
    entropy = [p for m in module.modules() if isinstance(m, ENTROPY_MODELS) for p in m.parameters()]
    quantiles = {id(p) for p in module.aux_parameters()}
    others, networks = optimizer.param_groups
    assert (others["lr"], networks["lr"]) == (2e-4, 5e-3)
    assert {id(p) for p in networks["params"]} == {id(p) for p in entropy} - quantiles
    assert {id(p) for p in others["params"]} | {id(p) for p in networks["params"]} == {
        id(p) for p in module.trainable_parameters()}
    _, optimizer = main_optimizer("model.optimizer.lr=2e-4")
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == 2e-4


def test_stage_two_without_its_predecessor_exits_within_a_minute_naming_init_from(tmp_path):
    """The README's refusal, as a user meets it on the command line."""
    import time

    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train.py", "experiment=demo_stage2", "trainer.max_steps=1",
                             f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode != 0 and time.perf_counter() - start < 60
    assert "model.init_from" in result.stderr and "model.init_from=random" in result.stderr


def test_the_bare_loop_takes_the_framework_s_training_step(tmp_path):
    """bench/learning.py's ours-bare arm: the same module and datamodule in a plain loop. Its claim,
    "ours against it is what the framework costs", holds only if its step is the Trainer's: from
    the same seed, three batches of each give the same weights (gradient clipping and a learning
    rate schedule included)."""
    from training.bare_loop import endless_batches, train_bare
    from training.config import instantiate_node

    overrides = [*TINY_STAGE1, "trainer.max_steps=3", "validate_before_training=false", "trainer.limit_val_batches=0",
                 "~callbacks.model_checkpoint", "model.gradient_clip_val=0.05", "model/scheduler=step",
                 "model.scheduler.milestones=[1]"]
    cfg = compose_config(overrides, tmp_path / "run")
    torch.manual_seed(cfg.seed)
    bare = instantiate_node(cfg.model, "model")
    initial = {k: v.detach().clone() for k, v in bare.named_parameters()}
    bare.objective.set_lambda(cfg.callbacks.rate_annealing.lambda_start)
    steps = train_bare(bare, endless_batches(instantiate_node(cfg.data, "data", seed=cfg.seed)), cfg.seed,
                       lambda step: step < 3)
    _, trainer = train(cfg)
    framework = dict(trainer.lightning_module.named_parameters())
    assert steps == trainer.global_step == 3
    assert trainer.lightning_module.optimizers()[0].param_groups[0]["lr"] < cfg.model.optimizer.lr  # the schedule ran
    assert [k for k in initial if not torch.equal(initial[k], framework[k])], "the framework's run did not train"
    different = [k for k, v in bare.named_parameters() if not torch.allclose(v, framework[k], rtol=1e-5, atol=1e-7)]
    assert not different, f"the bare loop and the Trainer disagree on {different[:5]}"


def test_training_values_are_logged_on_the_batches_the_loggers_write_and_the_last(tmp_path, monkeypatch):
    """Logging a batch the loggers never write costs as much as one they do (~10 % of the demo's
    batches per CPU second): the training terms are logged every ``log_every_n_steps`` batches
    and on the last, whose values are the run's final metrics."""
    from lightning_modules.base import CompressionLightningModule

    logged: list[tuple[int, float]] = []
    log_dict = CompressionLightningModule.log_dict

    def spy(module, values, **kwargs):
        if "train/loss" in values:
            logged.append((module.global_step, float(values["train/loss"])))
        return log_dict(module, values, **kwargs)

    monkeypatch.setattr(CompressionLightningModule, "log_dict", spy)
    cfg = compose_config([*TINY_STAGE1, "trainer.max_steps=7", "trainer.log_every_n_steps=3", "logger=csv",
                          "validate_before_training=false", "trainer.limit_val_batches=0"], tmp_path / "run")
    metrics, _ = train(cfg)
    assert [step for step, _ in logged] == [3, 6, 7]
    assert metrics["train/loss"] == pytest.approx(logged[-1][1])
    with next((tmp_path / "run").rglob("metrics.csv")).open() as table:
        written = [int(row["step"]) for row in csv.DictReader(table) if row.get("train/loss")]
    assert written == [2, 5]  # the loggers' rows count steps from 0: batches 3 and 6
