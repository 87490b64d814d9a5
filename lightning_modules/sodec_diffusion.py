"""What SODEC's stages 2, 3 and 4 share: the full model, d(x, x̂), the rate and alignment terms.

Stages differ only in switches (set by their YAML): which parts train and which loss terms are
on. The training-strategy and alignment ablations are the same switches.

Parts and the loss terms that reach them:
  E, H_a          (``train_vae_module``) x̂ through ŷ and ẑ → T_s, H_s
  P, ẑ's density  (``train_vae_module`` and ``rate_in_loss``) only the rate term
  D_a             (``train_fidelity_decoder``) the alignment term, and x̂ through the FGM
  H_s, T_s, guidance, LoRA   always (x̂)
Only parameters on the loss path are optimised; every other parameter is frozen, so DDP never
waits for a gradient that does not come (``find_unused_parameters: false``).

D_a is the fidelity-oriented decoder whose x̂_f guides the UNet. Trained with no loss on x̂_f it
drifts (its only gradient comes back through the ViT and x̂_f stops being an image), so training
it needs an alignment term; the defaults keep it fixed in stages 2 and 3 (SODEC's supplement
calls it "the fixed, fidelity-oriented decoder" of end-to-end fine-tuning).
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_modules.base import CompressionLightningModule, StageImages
from lightning_modules.losses import Alignment, DistortionLoss, NoAlignment
from osdic.models.sodec import SODEC
from osdic.checks import ConfigError
from osdic.registry import MODEL, register


@register(MODEL)
class SODECDiffusionModule(CompressionLightningModule):
    def __init__(
        self,
        codec: SODEC,
        distortion: DistortionLoss,
        alignment: Alignment,
        train_vae_module: bool,
        train_fidelity_decoder: bool,
        rate_in_loss: bool,
        **kwargs,
    ):
        super().__init__(codec=codec, rate_in_loss=rate_in_loss, **kwargs)
        self.distortion, self.alignment = distortion, alignment
        self.train_vae_module, self.train_fidelity_decoder = train_vae_module, train_fidelity_decoder
        if alignment.needs_lpips and distortion.lpips is None:
            raise ConfigError("alignment", f"{type(alignment).__name__} needs LPIPS: set distortion.lpips_weight > 0")
        if train_fidelity_decoder and isinstance(alignment, NoAlignment):
            raise ConfigError("train_fidelity_decoder", "D_a trained without an alignment term on x̂_f drifts away from "
                              "an image: set an alignment (model/alignment=mse) or train_fidelity_decoder=false")
        trained = {id(p) for p in self.trainable_parameters()} | {id(p) for p in self.aux_parameters()}
        for p in self.codec.parameters():
            if id(p) not in trained:
                p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        groups = self.codec.parameter_groups()
        parts = []
        if self.train_vae_module:
            parts += ["analysis", *(["rate_model"] if self.objective.rate_in_loss else [])]
        if self.train_fidelity_decoder:
            parts.append("fidelity_decoder")
        return [p for part in parts for p in groups[part] if p.requires_grad] + groups["generative"]

    def aux_parameters(self) -> list[nn.Parameter]:
        """ẑ's quantiles train with the VAE module (they define what ẑ is coded as)."""
        return list(self.codec.aux_parameters()) if self.train_vae_module else []

    def compute_losses(self, x: Tensor) -> tuple[dict[str, Tensor], StageImages]:
        align = not isinstance(self.alignment, NoAlignment)
        out = self.codec(x, fidelity_image=align or not self.training)
        terms = self.distortion(out["x_hat"], x)
        rate, rate_loss = self.objective.rate(out, x.shape[-2] * x.shape[-1], self.training)
        terms.update(rate)
        loss = terms["distortion"] + rate_loss
        images = {"x_hat": out["x_hat"], "fake_latent": out["latent_0"]}
        if out["x_hat_f"] is not None:
            images["x_hat_f"] = out["x_hat_f"]
            alignment_terms, alignment_loss = self.alignment(out["x_hat_f"], x, self.distortion)
            terms.update(alignment_terms)
            if alignment_loss is not None:
                loss = loss + alignment_loss
            if not align:  # still worth watching: x̂_f's fidelity in validation
                terms["align_mse"] = self.distortion.mse(out["x_hat_f"], x)
        terms["loss"] = loss
        return terms, images
