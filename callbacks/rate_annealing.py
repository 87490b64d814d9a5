"""The rate-annealing callback: the single owner of λ, the weight of the rate term.

λ is a function of the number of training batches this callback has seen (not of
``trainer.global_step``, which counts every optimizer step, so it would run 2–3× fast with the
aux and discriminator optimizers), identical on every DDP rank, saved in and restored from
checkpoints, and pushed to the module as ``pl_module.rate_lambda`` before every batch.

Schedules, with progress p = clip((batch − start_step) / num_steps, 0, 1):
  constant     λ_start
  linear       λ_start + (λ_end − λ_start)·p
  cosine       λ_end + (λ_start − λ_end)·(1 + cos πp)/2
  exponential  λ_start·(λ_end/λ_start)^p                  (geometric, natural for λ)
  step         λ_start·(λ_end/λ_start)^(k/K) after k of the K milestones (batch counts)
  target_bpp   HiFiC/ILLM style: λ_above while the measured bpp (EMA over batches, averaged
               over ranks) is above target_bpp, λ_below otherwise
"""

from __future__ import annotations

import math
from typing import Sequence

import pytorch_lightning as pl
import torch

from utils.config import ConfigError, require_choice, require_positive

SCHEDULES = ("constant", "linear", "cosine", "exponential", "step", "target_bpp")


class RateAnnealing(pl.Callback):
    def __init__(
        self,
        schedule: str = "constant",
        lambda_start: float = 1.0,
        lambda_end: float | None = None,
        num_steps: int = 0,
        start_step: int = 0,
        milestones: Sequence[int] = (),
        target_bpp: float | None = None,
        lambda_above: float | None = None,
        lambda_below: float | None = None,
        bpp_ema: float = 0.9,
    ):
        self.schedule = require_choice("schedule", schedule, SCHEDULES)
        self.lambda_start = require_positive("lambda_start", lambda_start)
        self.lambda_end = lambda_end
        self.num_steps, self.start_step = num_steps, start_step
        self.milestones = [int(m) for m in milestones]
        self.target_bpp, self.lambda_above, self.lambda_below = target_bpp, lambda_above, lambda_below
        self.bpp_ema = bpp_ema
        if schedule in ("linear", "cosine", "exponential", "step"):
            require_positive("lambda_end", lambda_end)
        if schedule in ("linear", "cosine", "exponential"):
            require_positive("num_steps", num_steps)
        if schedule == "step" and (not self.milestones or self.milestones != sorted(set(self.milestones))):
            raise ConfigError("milestones", f"step schedule needs strictly increasing batch counts, got {milestones}")
        if schedule == "target_bpp":
            require_positive("target_bpp", target_bpp)
            require_positive("lambda_above", lambda_above)
            require_positive("lambda_below", lambda_below)
        if not 0 <= bpp_ema < 1:
            raise ConfigError("bpp_ema", f"must be in [0, 1), got {bpp_ema}")
        self.batches_seen = 0
        self.measured_bpp: float | None = None

    # ------------------------------------------------------------------------- value
    def value(self, batch: int | None = None) -> float:
        """λ for the given training batch (default: the next one)."""
        batch = self.batches_seen if batch is None else batch
        if self.schedule == "constant":
            return self.lambda_start
        if self.schedule == "target_bpp":
            above = self.measured_bpp is None or self.measured_bpp > self.target_bpp
            return self.lambda_above if above else self.lambda_below
        if self.schedule == "step":
            passed = sum(batch - self.start_step >= m for m in self.milestones)
            return self.lambda_start * (self.lambda_end / self.lambda_start) ** (passed / len(self.milestones))
        p = min(max((batch - self.start_step) / self.num_steps, 0.0), 1.0)
        if self.schedule == "linear":
            return self.lambda_start + (self.lambda_end - self.lambda_start) * p
        if self.schedule == "cosine":
            return self.lambda_end + (self.lambda_start - self.lambda_end) * (1 + math.cos(math.pi * p)) / 2
        return self.lambda_start * (self.lambda_end / self.lambda_start) ** p

    # ------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.rate_lambda = self.value()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.rate_lambda = self.value()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches_seen += 1
        if self.schedule == "target_bpp":
            bpp = trainer.callback_metrics.get("train/bpp")
            if bpp is None:
                raise RuntimeError("target_bpp schedule needs the module to log train/bpp every step")
            # every rank must take the same decision: average the measurement first
            bpp = float(trainer.strategy.reduce(torch.as_tensor(bpp, device=pl_module.device).float(), reduce_op="mean"))
            previous = bpp if self.measured_bpp is None else self.measured_bpp
            self.measured_bpp = self.bpp_ema * previous + (1 - self.bpp_ema) * bpp
        pl_module.rate_lambda = self.value()

    def on_validation_start(self, trainer, pl_module) -> None:
        # validation before the first batch (sanity check) or after a resume still needs λ
        pl_module.rate_lambda = self.value()

    # ----------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"batches_seen": self.batches_seen, "measured_bpp": self.measured_bpp}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_seen = int(state_dict["batches_seen"])
        self.measured_bpp = state_dict["measured_bpp"]
