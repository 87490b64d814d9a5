"""Stage 3: end to end with d(x, x̂) + λ·R + α·L_align, λ raised by the rate-annealing callback
(λ ∈ {1, 2, 4, 8, 16}), L_align = MSE(x, x̂_f), α = 30, D_a fixed by default. The switches are in
conf/model/sodec_stage3.yaml."""

from lightning_modules.sodec_diffusion import SODECDiffusionModule


class Stage3JointModule(SODECDiffusionModule):
    """SODEC stage 3 (its own class so runs, checkpoints and W&B name the stage)."""
