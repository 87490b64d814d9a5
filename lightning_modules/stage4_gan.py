"""SODEC's final stage: stage 3's loss + β·L_g with a latent discriminator on ŷ_0 against the SD-VAE
latent of x (supplementary Eq. 1–2; paper β = 0.2, ablation β ∈ {0, 0.01, 0.05, 0.1, 0.2, 0.5})."""

from __future__ import annotations

from lightning_modules.adversarial import Adversary
from lightning_modules.sodec_diffusion import SODECDiffusionModule
from osdic.registry import MODEL, register


@register(MODEL)
class Stage4GANModule(SODECDiffusionModule):
    """Stage 3's module with an adversary (``model.adversary``), which this stage requires."""

    def __init__(self, adversary: Adversary, **kwargs):
        super().__init__(adversary=adversary, **kwargs)
