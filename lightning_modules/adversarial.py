"""The adversarial training step shared by SODEC's stage 4 and OSDiff.

Generator: L = (stage loss) + β·L_g; discriminator: L_D on D(real) and D(sg(fake)). The pair
(L_g, L_D) is a config node (``model/adversarial_loss``, losses.AdversarialLoss): non-saturating
by default, hinge as the alternative.

The generator block runs D with its parameters frozen by ``toggle_optimizer`` — but *with*
autograd, so β·L_g really reaches the generator (both public codes we studied ran it under
``torch.no_grad()``, which silently removes the adversarial term). The discriminator block sees
the fake detached. The two blocks' losses touch disjoint parameters, so one backward serves
both: every parameter gets its gradient in one pass, which keeps DDP's reduction complete
without ``find_unused_parameters``. Extra discriminator steps (``d_steps_per_g`` > 1) use
``torch.autograd.grad`` and an explicit all-reduce, for the same reason.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from lightning_modules.losses import AdversarialLoss
from osdic.checks import ConfigError, require_non_negative


def discriminator_accuracy(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The fractions of real and of fake logits on the right side of 0 (D's decision)."""
    return (real_logits.detach() > 0).float().mean(), (fake_logits.detach() < 0).float().mean()


class AdversarialMixin:
    """Mixed into a CompressionLightningModule whose ``compute_losses`` returns images with the
    discriminator's inputs: ``fake_latent`` (and ``real_latent`` when the stage already has it)."""

    def init_adversarial(
        self,
        discriminator: nn.Module | Callable[..., nn.Module],
        discriminator_optimizer: Callable[..., torch.optim.Optimizer],
        adversarial_loss: AdversarialLoss,
        adversarial_weight: float,
        adversarial_start: int = 0,
        d_steps_per_g: int = 1,
        discriminator_clip_val: float | None = None,
    ) -> None:
        if not isinstance(discriminator, nn.Module):  # a partial built on the generator's backbone and UNet context
            discriminator = discriminator(self.codec.backbone, context=self.codec.discriminator_context(1))
        self.discriminator = discriminator
        self.discriminator_optimizer_factory = discriminator_optimizer
        self.adversarial_loss = adversarial_loss
        self.adversarial_weight = require_non_negative("adversarial_weight", adversarial_weight)
        self.adversarial_start = int(require_non_negative("adversarial_start", adversarial_start))
        if d_steps_per_g < 1:
            raise ConfigError("d_steps_per_g", f"must be >= 1, got {d_steps_per_g}")
        self.d_steps_per_g = d_steps_per_g
        self.discriminator_clip_val = discriminator_clip_val

    def configure_optimizers(self):
        optimizers = super().configure_optimizers()
        d_opt = self.discriminator_optimizer_factory(list(self.discriminator.parameters()))
        if isinstance(optimizers, tuple):
            return [*optimizers[0], d_opt], optimizers[1]
        return [*optimizers, d_opt]

    def discriminator_inputs(self, x: Tensor, images: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(real, fake) in the discriminator's space."""
        if self.discriminator.space == "pixel":
            return x, images["x_hat"]
        real = images.get("real_latent")
        return (real if real is not None else self.codec.backbone.encode(x)), images["fake_latent"]

    @property
    def adversarial_active(self) -> bool:
        return self.adversarial_weight > 0 and self.global_step >= self.adversarial_start  # global_step: batches

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        g_opt, *aux_opts, d_opt = self._optimizers()

        # ---------------- generator block: D frozen, gradient flows through D into G
        self.toggle_optimizer(g_opt)
        terms, images = self.compute_losses(batch)
        real, fake = self.discriminator_inputs(batch, images)
        generator_loss = terms["loss"]
        if self.adversarial_active:
            terms["g_adv"] = self.adversarial_loss.generator_loss(self.discriminator(fake))
            terms["g_adv_weighted"] = self.adversarial_weight * terms["g_adv"]
            generator_loss = generator_loss + terms["g_adv_weighted"]
        terms["loss"] = generator_loss
        self.untoggle_optimizer(g_opt)

        # ---------------- discriminator block: fake detached (sg), G untouched
        self.toggle_optimizer(d_opt)
        real_logits, fake_logits = self.discriminator(real.detach(), fake.detach())
        terms["d_loss"] = self.adversarial_loss.discriminator_loss(real_logits, fake_logits)
        terms["d_real"], terms["d_fake"] = real_logits.detach().mean(), fake_logits.detach().mean()
        terms["d_acc_real"], terms["d_acc_fake"] = discriminator_accuracy(real_logits, fake_logits)
        self.untoggle_optimizer(d_opt)

        total = generator_loss + terms["d_loss"]
        if aux_opts:
            terms["aux_loss"] = self.codec.aux_loss()
            total = total + terms["aux_loss"]
        for opt in (g_opt, *aux_opts, d_opt):
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if self.gradient_clip_val:
            self.clip_gradients(g_opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        if self.discriminator_clip_val:
            self.clip_gradients(d_opt, gradient_clip_val=self.discriminator_clip_val, gradient_clip_algorithm="norm")
        g_opt.step()
        self.step_uncounted(*aux_opts, d_opt)
        for _ in range(self.d_steps_per_g - 1):
            self._extra_discriminator_step(d_opt, real.detach(), fake.detach())
        self._step_schedulers()
        terms["lr"] = torch.tensor(g_opt.param_groups[0]["lr"])
        self.log_terms("train", terms, batch_size=batch.shape[0])
        return terms["loss"]

    def _extra_discriminator_step(self, d_opt, real: Tensor, fake: Tensor) -> None:
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        loss = self.adversarial_loss.discriminator_loss(*self.discriminator(real, fake))
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = self.trainer.strategy.reduce(g, reduce_op="mean") if self.trainer.world_size > 1 else g
        if self.discriminator_clip_val:
            torch.nn.utils.clip_grad_norm_(params, self.discriminator_clip_val)
        self.step_uncounted(d_opt)
