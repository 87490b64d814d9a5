"""Training entry point: `python train.py experiment=... [overrides]` (see README).

Thin on purpose: everything is instantiated from the Hydra config; the metric named by
``optimized_metric`` is returned for sweeps; the W&B run is always closed. A SIGTERM
(preemption) ends the run with exit status 143 after checkpointing the current batch
(callbacks.preemption).
"""

from __future__ import annotations

import osdic.utils.known_warnings  # noqa: F401  (first: filters the known-harmless warnings of the libraries below)

import json
import logging
import signal
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.rate_annealing import RateAnnealing
from osdic.utils.cpu_memory import keep_freed_memory
from training.config import check_train_config, instantiate_collection, instantiate_node, metric_for_sweep
from training.loggers import describe_wandb_run, finish_wandb
from training.pipeline import run_pipeline
from training.run import isolate_multirun_job, job_overrides, resume_checkpoint

log = logging.getLogger(__name__)

#: what a shell reports for a process ended by SIGTERM: schedulers see a job that did not finish
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


def train(cfg: DictConfig) -> tuple[dict[str, float], pl.Trainer]:
    """Fit the configured module; return (final callback metrics, trainer)."""
    check_train_config(cfg)
    isolate_multirun_job(Path(__file__).resolve())
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_node(cfg.data, "data", seed=cfg.seed)  # the run's seed: the data nodes describe data
    module = instantiate_node(cfg.model, "model")
    callbacks = instantiate_collection(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_collection(cfg.get("logger"), "logger")
    trainer: pl.Trainer = instantiate_node(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    if isinstance(trainer.accelerator, CPUAccelerator):
        keep_freed_memory()  # the batches' activations: without it a sixth of the CPU time went to page faults
    exit_code = 1
    try:
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                describe_wandb_run(logger, cfg.paths.output_dir)
        ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), cfg.paths.output_dir)
        if cfg.get("validate_before_training") and ckpt_path is None:
            # where the stage starts from: its first validation, beside final_metrics.json
            initial = trainer.validate(module, datamodule=datamodule, verbose=False)
            if initial and trainer.is_global_zero:  # empty when the run has no validation data
                write_metrics(Path(cfg.paths.output_dir) / "initial_metrics.json", initial[0])
            if trainer.received_sigterm:  # agreed at that validation's end (callbacks.preemption); fit would forget it
                raise SIGTERMException
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                    weights_only=True)  # a checkpoint is data: tensors and plain containers only
        exit_code = 0
    except SIGTERMException:  # a SystemExit with status 0: the job would pass for finished
        exit_code = PREEMPTED_EXIT_STATUS
        raise SystemExit(exit_code) from None
    finally:
        finish_wandb(exit_code)
        if torch.distributed.is_initialized():  # the next job of a multirun starts its own group
            torch.distributed.destroy_process_group()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for schedule in (c for c in trainer.callbacks if isinstance(c, RateAnnealing)):
        metrics.update(schedule.final_metrics())  # a λ controller: where the run's rate landed
    if trainer.is_global_zero:  # what the offline comparison command reads
        write_metrics(Path(cfg.paths.output_dir) / "final_metrics.json", metrics)
    return metrics, trainer


def write_metrics(path: Path, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: float(v) for k, v in metrics.items()}, indent=2, sort_keys=True))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("pipeline"):  # a chain of stages, each its own `python train.py` run
        stages = OmegaConf.to_container(cfg.pipeline.stages, resolve=True)
        metrics = run_pipeline(Path(__file__).resolve(), stages, job_overrides(), cfg.paths.output_dir)
        return metric_for_sweep(cfg, metrics)
    metrics, trainer = train(cfg)
    if trainer.is_global_zero:
        log.info("final metrics: %s", {k: round(v, 5) for k, v in sorted(metrics.items())})
        log.info("outputs in %s", cfg.paths.output_dir)
    return metric_for_sweep(cfg, metrics)


if __name__ == "__main__":
    main()
