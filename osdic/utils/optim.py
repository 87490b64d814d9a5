"""Optimizers and learning-rate schedules that are not in torch."""

from __future__ import annotations

import math

import torch

from osdic.checks import ConfigError, require_int
from osdic.registry import MODEL, register


@register(MODEL)
def adamw_8bit(params, **kwargs):
    """bitsandbytes' 8-bit AdamW (OSDiff's optimizer), when bitsandbytes is installed (CUDA)."""
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ImportError("adamw_8bit needs bitsandbytes (pip install bitsandbytes, CUDA only)") from exc
    return bitsandbytes.optim.AdamW8bit(params, **kwargs)


class HoldThenCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """The learning rate held for the first ``hold_fraction`` of ``total_steps``, then a cosine
    decay to ``eta_min`` at the end: a run whose λ is steered to a target rate
    (callbacks.rate_annealing.TargetRate) keeps a fast-moving model while the controller finds λ,
    and still settles at the end (at a constant rate the real bpp of a validation jitters)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, hold_fraction: float = 0.5,
                 eta_min: float = 0.0, last_epoch: int = -1):
        require_int("total_steps", total_steps, minimum=1)
        if not 0 <= hold_fraction < 1:
            raise ConfigError("hold_fraction", f"must be in [0, 1), got {hold_fraction}")
        self.total_steps, self.hold_fraction, self.eta_min = total_steps, hold_fraction, eta_min
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The fraction of the initial learning rate at ``step``."""
        hold = self.hold_fraction * self.total_steps
        progress = min(max((step - hold) / (self.total_steps - hold), 0.0), 1.0)
        return (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        return [self.eta_min + (base - self.eta_min) * self.factor(self.last_epoch) for base in self.base_lrs]
