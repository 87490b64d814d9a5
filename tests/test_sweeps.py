"""Sweeps, W&B grouping, launchers, requeue, and the offline comparison table."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import train as train_module
from osdic.metrics.compare import ablation_table, collect, rd_curves, write_outputs
from osdic.metrics.compare import main as compare_main
from tests.conftest import CONF_DIR, TINY_SODEC, TINY_STAGE1, compose_config
from train import train

REPO = Path(train_module.__file__).resolve().parent
SWEEPS = sorted(p.stem for p in (Path(CONF_DIR) / "sweep").glob("*.yaml"))


def _sweep_params(sweep: str) -> dict[str, str]:
    return yaml.safe_load((Path(CONF_DIR) / "sweep" / f"{sweep}.yaml").read_text())["hydra"]["sweeper"]["params"]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_every_sweep_composes(sweep, tmp_path):
    assert all(cfg.sweep_name == sweep for cfg in _jobs(sweep, tmp_path))


def _jobs(sweep: str, tmp_path) -> list:
    """The composed config of every job of a sweep (one for an Optuna search space)."""
    overrides = [[f"{key}={value}" for value in str(values).split(",")]
                 for key, values in _sweep_params(sweep).items() if "(" not in str(values)]  # "(": an Optuna space
    return [compose_config([f"sweep={sweep}", *job], tmp_path / "run")
            for job in (itertools.product(*overrides) if overrides else [()])]


@pytest.mark.parametrize("sweep", ["optuna_lr"])
def test_sweeps_with_the_lambda_controller_decay_the_learning_rate_in_every_job(sweep, tmp_path):
    """The controller lands on a model that settles (BENCHMARKS.md, λ controller), and the jobs of
    a sweep differ in what it searches, not in their learning-rate schedule."""
    jobs = _jobs(sweep, tmp_path)
    assert any(job.callbacks.rate_annealing._target_.endswith("TargetRate") for job in jobs)
    assert {str(job.model.scheduler) for job in jobs} == {str(jobs[0].model.scheduler)}
    assert jobs[0].model.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"


def _run(args, cwd, timeout=900, **env):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1", **env}
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _inspect(run_dir: Path, *flags: str) -> str:
    wandb_run = next((run_dir / "wandb").glob("offline-run-*"))
    return subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", *flags, "--json",
                           str(wandb_run)], capture_output=True, text=True, check=True, cwd=run_dir).stdout


def _wandb_summary(run_dir: Path) -> dict:
    return json.loads(_inspect(run_dir, "--summary"))


def _wandb_run_record(run_dir: Path) -> dict:
    records = (json.loads(line) for line in _inspect(run_dir).splitlines() if line.strip())
    return next(r["run"] for r in records if r["type"] == "run")


@pytest.mark.slow
def test_multirun_gives_separate_wandb_runs_in_one_group_and_a_comparison_table(tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in TINY_STAGE1 if o != "logger=none"]
    _run(["-m", *overrides, "logger=wandb", "sweep_name=lambda_check", "callbacks.rate_annealing.lambda_start=0.5,2",
          f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    runs = [_wandb_summary(sweep_dir / str(job)) for job in (0, 1)]
    records = [_wandb_run_record(sweep_dir / str(job)) for job in (0, 1)]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert [r["run_group"] for r in records] == ["lambda_check-sweep"] * 2
    assert [r["job_type"] for r in records] == ["train"] * 2
    assert [r["display_name"] for r in records] == ["train λ=0.5", "train λ=2"]
    assert [run["summary"]["train/lambda"] for run in runs] == [0.5, 2]
    assert all((sweep_dir / str(job) / "provenance" / "pip_freeze.txt").is_file() for job in (0, 1))

    header, rows = ablation_table(collect(sweep_dir))
    assert header[0] == "callbacks.rate_annealing.lambda_start" and [r[0] for r in rows] == ["0.5", "2"]
    assert "val/bpp_real" in header
    markdown = write_outputs(sweep_dir, header, rows)
    assert markdown.count("\n") == 4 and (sweep_dir / "ablation.png").is_file()


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    _run(["-m", *TINY_STAGE1, "hydra/launcher=local", f"hydra.sweep.dir={sweep_dir}",
          f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    assert (sweep_dir / "0" / "final_metrics.json").is_file()


@pytest.mark.slow
def test_a_guidance_sweep_runs_ddp_jobs_each_in_its_own_process_tree(tmp_path):
    """A sweep of guidance variants under DDP (find_unused_parameters=false) on 2 CPU processes
    per job: Lightning's DDP launcher, re-running argv for rank 1, must not launch the sweep again —
    exactly the two jobs run (submitit's local launcher), each trains past its second step (a
    parameter without a gradient fails it; every variant's gradients are checked in-process by
    tests/test_sodec.py::test_every_optimised_parameter_gets_a_gradient)."""
    sweep_dir = tmp_path / "sweep"
    tiny = [o for o in TINY_SODEC if not o.startswith("model/codec/guidance")]
    _run(["-m", "model=sodec_stage2", *tiny, "data=samples", "trainer=ddp_cpu", "logger=csv", "trainer.max_steps=2",
          "hydra/launcher=local", "trainer.val_check_interval=2",
          "model/codec/guidance=text_tiny,fgm_tiny",
          f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, timeout=1200)
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    for job in jobs:
        metrics = json.loads((sweep_dir / job / "final_metrics.json").read_text())
        assert "val/bpp_real" in metrics, job


def test_a_relaunched_job_resumes_its_checkpoint_and_wandb_run(tmp_path):
    out = tmp_path / "job"
    overrides = [o for o in TINY_STAGE1 if o != "logger=none"] + ["logger=wandb"]
    _, first = train(compose_config([*overrides, "trainer.max_steps=2", "trainer.val_check_interval=2"], out))
    first_id = first.logger.experiment.id
    _, second = train(compose_config([*overrides, "trainer.max_steps=4", "trainer.val_check_interval=2"], out))
    assert second.global_step == 4, "continued from the job's last.ckpt (ckpt_path=auto)"
    # offline-run-<date>_<time>-<id>, and W&B appends -1 when the relaunch starts within the same second
    run_ids = {p.name.split("-")[3] for p in (out / "wandb").glob("offline-run-*")}
    assert run_ids == {first_id}


def test_the_rate_point_pipeline_ends_at_the_final_stage_with_the_gan(tmp_path):
    """The supplement's final model is stage 3 fine-tuned with the GAN: a rate point's chain ends there."""
    pipeline = compose_config(["pipeline=sodec_rd_point", "pipeline.rate_point=4"], tmp_path / "run").pipeline
    stages = OmegaConf.to_container(pipeline.stages, resolve=True)
    assert list(stages) == ["stage1", "stage2", "stage3", "stage4"]
    assert stages["stage4"][0] == "experiment=sodec_stage4"
    def value_of(stage: str, key: str) -> float:
        return float(next(o.split("=", 1)[1] for o in stages[stage] if o.startswith(f"{key}=")))

    assert value_of("stage4", "callbacks.rate_annealing.lambda_start") == 4.0
    assert value_of("stage3", "callbacks.rate_annealing.lambda_end") == 4.0
    assert value_of("stage3", "callbacks.rate_annealing.lambda_start") == 2.0


@pytest.mark.slow
def test_pipeline_chains_the_stages_of_a_rate_point_and_resumes_after_the_finished_ones(tmp_path):
    """`pipeline=sodec_rd_point`: stage 1 at λ_3/2 → stage 2 from stage 1 → stage 3 annealed to
    λ_3 from stage 2 → the final stage at λ_3 from stage 3, each in its own directory; a relaunch
    skips the finished stages."""
    tiny_sodec = [o for o in TINY_SODEC if not o.startswith(("trainer", "data.", "debug", "logger", "model.init_from"))]
    stages = {
        "stage1": ["model/codec/vae_codec@model.codec=hific_tiny", "model.distortion.lpips_weight=0",
                   "callbacks.rate_annealing.lambda_start=${pipeline.stage1_lambda}"],
        "stage2": ["model=sodec_stage2", *tiny_sodec],
        "stage3": ["model=sodec_stage3", *tiny_sodec, "callbacks/rate_annealing=exponential",
                   "callbacks.rate_annealing.num_steps=4",
                   "callbacks.rate_annealing.lambda_start=${pipeline.stage1_lambda}",
                   "callbacks.rate_annealing.lambda_end=${pipeline.rate_point}"],
        "stage4": ["model=sodec_stage4", *tiny_sodec, "model/adversary/discriminator=latent_tiny",
                   "callbacks.rate_annealing.lambda_start=${pipeline.rate_point}"],
    }
    stages_override = "pipeline.stages={" + ",".join(
        f"{name}:[" + ",".join(f"'{o}'" for o in overrides) + "]" for name, overrides in stages.items()) + "}"
    run_dir = tmp_path / "chain"
    common = ["pipeline=sodec_rd_point", "pipeline.rate_point=4", stages_override, "trainer=cpu", "data.crop_size=64",
              "data.batch_size=2", "data.num_workers=0", "debug=fast", "logger=none", "model.val_metrics=[psnr]",
              f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = _run(common, tmp_path)
    assert first.stdout.count("[pipeline] stage") == 4
    config = {s: yaml.safe_load((run_dir / s / ".hydra" / "config.yaml").read_text()) for s in stages}
    assert config["stage1"]["callbacks"]["rate_annealing"]["lambda_start"] == 2.0
    assert (config["stage3"]["callbacks"]["rate_annealing"]["lambda_start"],
            config["stage3"]["callbacks"]["rate_annealing"]["lambda_end"]) == (2.0, 4.0)
    assert config["stage4"]["model"]["stage"] == "sodec_stage4"
    for stage, previous in [("stage2", "stage1"), ("stage3", "stage2"), ("stage4", "stage3")]:
        assert config[stage]["model"]["init_from"] == str(run_dir / previous / "checkpoints" / "last.ckpt")
    assert json.loads((run_dir / "stage4" / "codec" / "codec.json").read_text())["stage"] == "sodec_stage4"

    again = _run(common, tmp_path)
    assert again.stdout.count("finished earlier") == 4


def test_run_name_is_the_stage_and_the_values_not_where_it_starts_from(tmp_path):
    from training.run import run_name

    compose_config(["experiment=sodec_stage3", "model.init_from=/runs/stage2/checkpoints/last.ckpt",
                    "callbacks.rate_annealing.lambda_start=2", "model.codec.backbone.lora_rank=16", "debug=fast"],
                   tmp_path / "run")
    assert run_name("sodec_stage3") == "sodec_stage3 λ=2, rank=16"


def _finished_sweep(root: Path, jobs: list[tuple[list[str], dict | None]]) -> Path:
    """A multirun directory: per job its overrides and final metrics (None: the job failed)."""
    for number, (overrides, metrics) in enumerate(jobs):
        (root / str(number) / ".hydra").mkdir(parents=True)
        (root / str(number) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if metrics is not None:
            (root / str(number) / "final_metrics.json").write_text(json.dumps(metrics))
    return root


def test_compare_draws_rd_curves_of_jobs_that_differ_in_rate_and_leaves_out_the_loss(tmp_path):
    jobs = [([f"callbacks.rate_annealing.lambda_start={lam}", f"model.codec.backbone.lora_rank={rank}"],
             {"val/bpp_real": bpp, "val/psnr": 30 - 2 * lam, "val/loss": 5.0 * lam})
            for lam, rank, bpp in [(2, 8, 0.4), (4, 8, 0.2), (2, 16, 0.5), (4, 16, 0.25)]]
    sweep = _finished_sweep(tmp_path / "sweep", [*jobs, (["callbacks.rate_annealing.lambda_start=8",
                                                          "model.codec.backbone.lora_rank=8"], None)])
    assert compare_main([str(sweep)]) == 0
    header, rows = ablation_table(collect(sweep))
    assert "val/loss" not in header and (sweep / "ablation.png").is_file()
    rate, curves = rd_curves(header, rows)
    assert rate == "val/bpp_real"
    assert {label: [(bpp, rate_label) for bpp, _, rate_label in points] for label, points in curves.items()} == {
        "rank=8": [(0.2, "λ=4"), (0.4, "λ=2")], "rank=16": [(0.25, "λ=4"), (0.5, "λ=2")]}, "failed job left out"


def test_compare_fails_when_every_job_failed(tmp_path, capsys):
    sweep = _finished_sweep(tmp_path / "sweep", [(["callbacks.rate_annealing.lambda_start=2"], None),
                                                 (["callbacks.rate_annealing.lambda_start=4"], None)])
    assert compare_main([str(sweep)]) == 1
    assert "none of the 2 jobs" in capsys.readouterr().err and not (sweep / "ablation.md").exists()
