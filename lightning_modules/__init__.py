"""LightningModules of the training stages (stages 2 and 3 are one module, configured per stage),
sharing :class:`base.CompressionLightningModule`."""

import torch

from osdic.codec.package import CODEC_CLASSES
from lightning_modules import losses


def _subclasses(namespace, base: type) -> set[str]:
    return {f"{namespace.__name__}.{name}" for name, value in vars(namespace).items()
            if isinstance(value, type) and issubclass(value, base)}


#: What the ``model`` config of a run may build when evaluate.py loads one of its checkpoints:
#: these modules, their codecs, losses and discriminators, and torch's optimizers and LR schedulers.
MODEL_CONFIG_TARGETS = frozenset({
    *CODEC_CLASSES,
    "lightning_modules.stage1_vae.Stage1VAEModule",
    "lightning_modules.sodec_diffusion.SODECDiffusionModule",
    "lightning_modules.stage4_gan.Stage4GANModule",
    "lightning_modules.osdiff.OSDiffModule",
    "lightning_modules.losses.DistortionLoss",
    *_subclasses(losses, losses.Alignment),
    *_subclasses(losses, losses.AdversarialLoss),
    "osdic.models.discriminators.latent_discriminator",
    "osdic.models.discriminators.pixel_discriminator",
    "osdic.models.discriminators.UNetFeatureDiscriminator",
    "osdic.utils.optim.adamw_8bit",
    *_subclasses(torch.optim, torch.optim.Optimizer),
    *_subclasses(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
})
