"""Stage 2: E, H_a, P frozen; train D_a, H_s, T_s, the guidance projection and the UNet's LoRA
with the distortion d(x, x̂) alone (k_M = 1, k_P = 2)."""

from lightning_modules.sodec_diffusion import SODECDiffusionModule


class Stage2DiffusionModule(SODECDiffusionModule):
    def __init__(self, train_vae_module: bool = False, rate_term: bool = False, alignment: str = "none", **kwargs):
        super().__init__(train_vae_module=train_vae_module, rate_term=rate_term, alignment=alignment, **kwargs)
