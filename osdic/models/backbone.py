"""The Stable Diffusion backbone: UNet ε_θ (frozen, LoRA-trainable), VAE (frozen), noise schedule.

Built either with ``from_pretrained`` from a model id or local directory (SD 2.1-base by
default) or from config dicts with random weights (``tiny`` for tests and the demo, and the
real SD 2.1 configs for FLOP-exact benchmarks). Both paths build the same diffusers classes.
"""

from __future__ import annotations

from collections.abc import Mapping

from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from torch import Tensor

from osdic.checks import ConfigError, MissingWeightsError, require_choice, require_int
from osdic.utils.modules import ExternalWeights, architecture_only_build, plain
from osdic.utils.untrusted import check_settings
from osdic.registry import CODEC, register

PREDICTION_TYPES = ("epsilon", "v_prediction")
#: LoRA targets of the UNet (OSEDiff / SODEC style): attention projections, feed-forward,
#: ResNet convolutions and time-embedding projections.
DEFAULT_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "time_emb_proj",
)


def _is_local_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def _load_pretrained(cls, source: str, subfolder: str, revision: str | None):
    if _is_local_path(source) and not (Path(source).expanduser() / subfolder).is_dir():
        raise MissingWeightsError(
            f"cannot load {cls.__name__}: {Path(source).expanduser() / subfolder} does not exist. A local backbone "
            f"directory is made by `python -m training.standin_backbone --photos <folders> --out {source}` (the "
            f"CPU stand-in for SD 2.1 that `make demo` and `make table` build), or holds SD 2.1 itself: "
            f"`hf download stabilityai/stable-diffusion-2-1-base --local-dir {source}`.")
    try:
        # local files only: a compute node reads the cache (`python -m training.preflight download` fills it)
        if architecture_only_build():
            return cls.from_config(cls.load_config(source, subfolder=subfolder, revision=revision, local_files_only=True))
        return cls.from_pretrained(source, subfolder=subfolder, revision=revision, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load {cls.__name__} from {source!r} (subfolder {subfolder!r}): {exc}\n"
            f"Download the model once on a machine with internet, e.g. "
            f"`hf download {source} --local-dir /models/{source.split('/')[-1]}`, then set "
            f"model.codec.backbone.pretrained=/models/{source.split('/')[-1]} (or point HF_HOME at a cache that holds it)."
        ) from None


def diffuse(latent_0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """q(y_t | y_0) = √ᾱ·y_0 + √(1 − ᾱ)·ε, computed in float32 whatever the autocast dtype."""
    with torch.autocast(device_type=latent_0.device.type, enabled=False):
        alpha_bar = alpha_bar.float().view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * latent_0.float() + (1 - alpha_bar).sqrt() * noise.float()


def clean_latent(latent_t: Tensor, prediction: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """ŷ_0 from the UNet's ε or v prediction, in float32 whatever the autocast dtype: at t = 999
    the ε-conversion divides by √ᾱ ≈ 0.068, so bf16 arithmetic would multiply its rounding by ~15."""
    with torch.autocast(device_type=latent_t.device.type, enabled=False):
        alpha_bar = alpha_bar.float().view(-1, 1, 1, 1)
        latent_t, prediction = latent_t.float(), prediction.float()
        if prediction_type == "epsilon":
            return (latent_t - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
        return alpha_bar.sqrt() * latent_t - (1 - alpha_bar).sqrt() * prediction


@register(CODEC)
class DiffusionBackbone(ExternalWeights):
    """UNet + VAE + ᾱ schedule, with helpers for the one-step decode ŷ_t → ŷ_0 → x̂."""

    def __init__(
        self,
        pretrained: str | None = "stabilityai/stable-diffusion-2-1-base",
        revision: str | None = None,
        unet_config: dict | None = None,
        vae_config: dict | None = None,
        scheduler_config: dict | None = None,
        prediction_type: str | None = None,
        lora_rank: int | None = 32,
        lora_alpha: float | None = None,
        lora_init: str | bool = "gaussian",
        lora_targets: Sequence[str] | None = None,
        gradient_checkpointing: bool = False,
        full_finetune: bool = False,
    ):
        """The UNet trains through LoRA (``lora_rank``), whole (``full_finetune``, the LoRA
        table's full fine-tuning arm: every UNet weight is trained and stored), or not at all
        (neither: OSDiff's frozen UNet). The VAE is always frozen."""
        super().__init__()
        configs = (unet_config, vae_config, scheduler_config)
        if pretrained is None and any(c is None for c in configs):
            raise ConfigError("pretrained", "give a model id/path, or unet_config, vae_config and scheduler_config")
        classes = (UNet2DConditionModel, AutoencoderKL, DDPMScheduler)
        for key, config, cls in zip(("unet_config", "vae_config", "scheduler_config"), configs, classes):
            if config is not None and not isinstance(config, Mapping):  # diffusers takes a string for a Hub id
                raise ConfigError(key, f"must be a mapping of the model's settings, got {type(config).__name__}")
            if config is not None:
                check_settings(cls, config, key)
        if lora_rank is not None:  # null: no LoRA
            require_int("lora_rank", lora_rank, minimum=1)
            if full_finetune:
                raise ConfigError("full_finetune", f"trains the whole UNet, so it takes no LoRA: set lora_rank=null "
                                                   f"(got {lora_rank})")
        # null in a config: the list has one home, here; a codec package records the resolved list
        self.lora_targets = list(DEFAULT_LORA_TARGETS if lora_targets is None else lora_targets)
        self.pretrained_source = pretrained if unet_config is None else None
        if unet_config is not None:
            self.unet = UNet2DConditionModel.from_config(plain(unet_config))
            self.vae = AutoencoderKL.from_config(plain(vae_config))
            scheduler = DDPMScheduler.from_config(plain(scheduler_config))
        else:
            self.unet = _load_pretrained(UNet2DConditionModel, pretrained, "unet", revision)
            self.vae = _load_pretrained(AutoencoderKL, pretrained, "vae", revision)
            scheduler = _load_pretrained(DDPMScheduler, pretrained, "scheduler", revision)
        self.prediction_type = require_choice(
            "prediction_type", prediction_type or scheduler.config.prediction_type, PREDICTION_TYPES
        )
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.unet.requires_grad_(full_finetune)
        self.vae.requires_grad_(False)
        if lora_rank is not None:
            self.unet.add_adapter(
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_alpha if lora_alpha is not None else lora_rank,
                    init_lora_weights=lora_init,
                    target_modules=self.lora_targets,
                )
            )
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def resolved_arguments(self, arguments: dict) -> dict:
        """A package keeps the LoRA targets it was trained with, not a default that may change."""
        return {**arguments, "lora_targets": self.lora_targets}

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def unet_config(self) -> dict:
        """The UNet's architecture (diffusers' config without its bookkeeping keys): what a
        module built to match it needs."""
        return {key: value for key, value in self.unet.config.items() if not key.startswith("_")}

    def train(self, mode: bool = True) -> "DiffusionBackbone":
        super().train(mode)
        self.vae.eval()  # frozen: never in training mode
        return self

    # ------------------------------------------------------------------- one-step decoding
    def predict_clean_latent(self, latent_t: Tensor, timestep: int | Tensor, context: Tensor) -> Tensor:
        """One UNet step: ŷ_0 from ŷ_t at ``timestep`` (ε- or v-prediction), in float32."""
        t = torch.as_tensor(timestep, device=latent_t.device).long()
        t_batch = t.expand(latent_t.shape[0]) if t.dim() == 0 else t
        output = self.unet(latent_t, t_batch, encoder_hidden_states=context.to(latent_t.dtype)).sample
        return self.to_clean_latent(latent_t, t_batch, output)

    def to_clean_latent(self, latent_t: Tensor, timestep: Tensor, prediction: Tensor) -> Tensor:
        """ŷ_0 from a UNet prediction at ``timestep`` (one per batch element), in float32."""
        return clean_latent(latent_t, prediction, self.alphas_cumprod[timestep], self.prediction_type)

    def add_noise(self, latent_0: Tensor, noise: Tensor, timestep: Tensor) -> Tensor:
        """Forward process q(y_t | y_0), in float32."""
        return diffuse(latent_0, noise, self.alphas_cumprod[timestep])

    def decode(self, latent: Tensor) -> Tensor:
        """D_m: scaled SD latent → image in [0, 1] (differentiable w.r.t. the latent)."""
        return (self.vae.decode(latent / self.scaling_factor).sample + 1) / 2

    def encode(self, x: Tensor) -> Tensor:
        """E_SD: image in [0, 1] → scaled SD latent (the posterior mean; no gradient), NCHW.

        On the CPU the VAE hands back a channels-last latent, and the weight gradient of oneDNN's
        strided 1×1 convolution (OSDiff's G_a skip) on such a 4-channel input writes out of
        bounds: heap corruption, a crash with one thread per process as in DDP on CPU (oneDNN
        issue 6035 also reports wrong gradients). Contiguous, it takes another kernel."""
        with torch.no_grad():
            return (self.vae.encode(x * 2 - 1).latent_dist.mode() * self.scaling_factor).contiguous()

    def unet_parameters(self) -> list[torch.nn.Parameter]:
        """The UNet's trainable weights: its LoRA, every weight under ``full_finetune``, else none."""
        return [p for p in self.unet.parameters() if p.requires_grad]
