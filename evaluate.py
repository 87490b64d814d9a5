"""Evaluation entry point: real bitstreams, metrics, baselines, RD plots, BD-rates (see README).

    python evaluate.py codecs.SODEC=[a/codec,b/codec] data=kodak metrics=[psnr,ms_ssim,lpips_alex]
    python evaluate.py codecs.SODEC=logs/sodec_rd_points/multiruns/<date_time>   # a sweep: one RD curve

Thin on purpose: the images are the ``split`` of the data node training reads too (conf/data/),
the library runs the evaluation (osdic.metrics.evaluate_codecs); the metric named by
``optimized_metric`` is returned for sweeps; the W&B run is always closed.
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lightning_modules import MODEL_CONFIG_TARGETS
from osdic.checks import config_section
from osdic.codec.package import export_package, load_package
from osdic.metrics.datasets import split_images
from osdic.metrics.evaluate_codecs import EvaluationResult, benchmark_codecs, evaluate_codecs
from training.config import metric_for_sweep
from training.loggers import finish_wandb, log_evaluation
from osdic.utils.untrusted import build, load_checkpoint, read_run_config


def load_codec(path: str):
    """A codec package directory, or a Lightning checkpoint of a run of train.py (its Hydra
    config is read from the run's .hydra/config.yaml and the codec exported on the fly). Both
    files are data: the config builds only this project's classes, the checkpoint only tensors."""
    path = Path(path)
    if path.suffix != ".ckpt":
        return load_package(path)
    run_config = path.parent.parent / ".hydra" / "config.yaml"
    if not run_config.is_file():
        raise FileNotFoundError(f"{path}: no run config at {run_config}; export a codec package instead")
    model_config = OmegaConf.to_container(OmegaConf.create(read_run_config(run_config)).model, resolve=True)
    checkpoint = load_checkpoint(path)
    module = build(model_config, MODEL_CONFIG_TARGETS, str(run_config), partial=True)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return load_package(export_package(module.codec.eval(), tempfile.mkdtemp(prefix="codec-")))


def evaluate(cfg: DictConfig) -> EvaluationResult | dict:
    """The evaluation's result, or in benchmark mode the latency report."""
    with config_section("data"):
        images = split_images(cfg.data, cfg.split, cfg.max_images)
    codecs = OmegaConf.to_container(cfg.codecs, resolve=True)
    if cfg.benchmark:
        return benchmark_codecs(images, codecs, cfg.output_dir, device=cfg.device, warmup=cfg.warmup,
                                repeat=cfg.benchmark_repeat, resolution=cfg.benchmark_resolution,
                                load_codec=load_codec)
    exit_code = 1
    try:
        result = evaluate_codecs(
            images, codecs, cfg.output_dir, metrics=list(cfg.metrics), baselines=list(cfg.baselines),
            baseline_qualities=list(cfg.baseline_qualities), match_baselines=cfg.match_baselines, anchor=cfg.anchor,
            published_points=cfg.published_points, device=cfg.device, warmup=cfg.warmup,
            allow_random_weights=cfg.allow_random_weights, load_codec=load_codec)
        if cfg.wandb.enabled:
            run_config = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
            log_evaluation(cfg.wandb.project, result, OmegaConf.to_container(run_config, resolve=True))
        exit_code = 0
    finally:
        finish_wandb(exit_code)
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    result = evaluate(cfg)
    return metric_for_sweep(cfg, result.scalars()) if isinstance(result, EvaluationResult) else None


if __name__ == "__main__":
    main()
