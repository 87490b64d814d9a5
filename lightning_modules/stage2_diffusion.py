"""Stage 2: E, H_a, P (and by default D_a) frozen; train H_s, T_s, the guidance projection and the
UNet's LoRA with the distortion d(x, x̂) alone. The switches are in conf/model/sodec_stage2.yaml."""

from lightning_modules.sodec_diffusion import SODECDiffusionModule


class Stage2DiffusionModule(SODECDiffusionModule):
    """SODEC stage 2 (its own class so runs, checkpoints and W&B name the stage)."""
