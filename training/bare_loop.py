"""A stage's training step without the framework: the module's losses, optimizers and schedule
driven by a plain PyTorch loop over the datamodule's training batches — no Trainer, no logging,
no callbacks. It takes exactly the step ``training_step`` takes (same batches, same noise, same
clipping: tests/test_train.py checks the weights after a few batches are equal), so a comparison
with it (bench/learning.py, the ``ours-bare`` arm) measures what Lightning, logging and the
callbacks cost in learning, and nothing else.

Stages without an adversary only: the GAN step's toggling is Lightning's.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from lightning_modules.base import CompressionLightningModule, batch_seed


def endless_batches(datamodule) -> Iterator[Tensor]:
    """The datamodule's training batches, epoch after epoch, as a trainer would draw them on one
    process (its epoch shuffle takes each pass as the next epoch)."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    while True:
        yield from loader


def train_bare(module: CompressionLightningModule, batches: Iterator[Tensor], run_seed: int,
               keep_going: Callable[[int], bool]) -> int:
    """Train ``module`` on ``batches`` while ``keep_going(batches trained so far)``; → the batches
    trained. ``run_seed``: the seed a Lightning run of it would have started with (its ``seed``)."""
    if module.adversary is not None:
        raise ValueError(f"{module.stage} trains with an adversary: the bare loop takes stages without one")
    module.train()
    optimizers = module.build_optimizers()
    scheduler = module.build_scheduler(optimizers["main"])
    main_parameters = [p for group in optimizers["main"].param_groups for p in group["params"]]
    step = 0
    while keep_going(step):
        batch = next(batches)
        torch.manual_seed(batch_seed(run_seed, 0, step))
        terms, _ = module.compute_losses(batch)
        total = module.with_aux_loss(terms, terms["loss"], trains_aux="aux" in optimizers)
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        if module.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(main_parameters, module.gradient_clip_val)
        for optimizer in optimizers.values():
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
    return step
