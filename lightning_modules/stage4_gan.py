"""SODEC's final stage: stage 3's loss + β·L_g with a latent discriminator on ŷ_0 against the SD-VAE
latent of x (supplementary Eq. 1–2; paper β = 0.2, ablation β ∈ {0, 0.01, 0.05, 0.1, 0.2, 0.5})."""

from __future__ import annotations

from lightning_modules.adversarial import AdversarialMixin
from lightning_modules.losses import AdversarialLoss
from lightning_modules.sodec_diffusion import SODECDiffusionModule
from osdic.registry import MODEL, register


@register(MODEL)
class Stage4GANModule(AdversarialMixin, SODECDiffusionModule):
    def __init__(
        self,
        discriminator,
        discriminator_optimizer,
        adversarial_loss: AdversarialLoss,
        adversarial_weight: float = 0.2,
        adversarial_start: int = 0,
        d_steps_per_g: int = 1,
        discriminator_clip_val: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.init_adversarial(discriminator, discriminator_optimizer, adversarial_loss, adversarial_weight,
                              adversarial_start, d_steps_per_g, discriminator_clip_val)
