"""Stage 3: everything trains end to end with d(x, x̂) + λ·R + α·L_align, λ raised by the
rate-annealing callback (λ ∈ {1, 2, 4, 8, 16}), L_align = MSE(x, x̂_f), α = 30."""

from lightning_modules.sodec_diffusion import SODECDiffusionModule


class Stage3JointModule(SODECDiffusionModule):
    def __init__(self, train_vae_module: bool = True, rate_term: bool = True, alignment: str = "mse", **kwargs):
        super().__init__(train_vae_module=train_vae_module, rate_term=rate_term, alignment=alignment, **kwargs)
