"""LightningModules of the training stages (stages 2 and 3 are one module, configured per stage),
sharing :class:`base.CompressionLightningModule`."""

import torch

from lightning_modules import losses, osdiff, sodec_diffusion, stage1_vae, stage4_gan  # noqa: F401  (registers them)
from osdic.models import discriminators  # noqa: F401  (registers them)
from osdic.registry import CODEC, MODEL, registered
from osdic.utils import optim  # noqa: F401  (registers them)


def _subclasses(namespace, base: type) -> set[str]:
    return {f"{namespace.__name__}.{name}" for name, value in vars(namespace).items()
            if isinstance(value, type) and issubclass(value, base)}


#: What the ``model`` config of a run may build when evaluate.py loads one of its checkpoints: the
#: classes registered as codec or model parts (osdic.registry), and torch's optimizers and LR schedulers.
MODEL_CONFIG_TARGETS = frozenset({
    *registered(CODEC),
    *registered(MODEL),
    *_subclasses(torch.optim, torch.optim.Optimizer),
    *_subclasses(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
})
