"""The adversary of SODEC's final stage and of OSDiff: a component a stage is given
(``model.adversary``), not a mixin it inherits.

Generator: L = (stage loss) + β·L_g; discriminator: L_D on D(real) and D(sg(fake)). The pair
(L_g, L_D) is a config node (``model/adversary/loss``, losses.AdversarialLoss): non-saturating
by default, hinge as the alternative. The stage's one training step
(:meth:`lightning_modules.base.CompressionLightningModule.training_step`) runs the generator and
discriminator blocks; this object holds what they need: D, its optimizer, the loss pair, β and
its schedule.

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
from osdic.codec.interface import ImageCodec
from osdic.registry import MODEL, register


def discriminator_accuracy(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The fractions of real and of fake logits on the right side of 0 (D's decision)."""
    return (real_logits.detach() > 0).float().mean(), (fake_logits.detach() < 0).float().mean()


@register(MODEL)
class Adversary(nn.Module):
    """``discriminator``: built, or a factory called with the codec's backbone and its UNet context
    (:meth:`bind`: a discriminator on the UNet's own features). ``weight``: β (λ4 in OSDiff);
    ``start``: training batches before β·L_g switches on (D trains from the first)."""

    def __init__(
        self,
        discriminator: nn.Module | Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: AdversarialLoss,
        weight: float,
        start: int = 0,
        d_steps_per_g: int = 1,
        clip_val: float | None = None,
    ):
        super().__init__()
        self._discriminator_factory = None if isinstance(discriminator, nn.Module) else discriminator
        self.discriminator = discriminator if isinstance(discriminator, nn.Module) else None
        self.optimizer_factory = optimizer
        self.loss = loss
        self.weight = require_non_negative("weight", weight)
        self.start = int(require_non_negative("start", start))
        if d_steps_per_g < 1:
            raise ConfigError("d_steps_per_g", f"must be >= 1, got {d_steps_per_g}")
        self.d_steps_per_g = d_steps_per_g
        self.clip_val = clip_val

    def bind(self, codec: ImageCodec) -> Adversary:
        """Build a discriminator given as a factory on ``codec``'s backbone and UNet context."""
        if self.discriminator is None:
            self.discriminator = self._discriminator_factory(codec.backbone, context=codec.discriminator_context(1))
        return self

    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(list(self.discriminator.parameters()))

    def active(self, step: int) -> bool:
        """Whether β·L_g is part of the generator's loss at training batch ``step``."""
        return self.weight > 0 and step >= self.start

    def inputs(self, x: Tensor, images: dict[str, Tensor], codec: ImageCodec) -> tuple[Tensor, Tensor]:
        """(real, fake) in the discriminator's space: pixels, or the latents the stage produced."""
        if self.discriminator.space == "pixel":
            return x, images["x_hat"]
        real = images.get("real_latent")
        return (real if real is not None else codec.backbone.encode(x)), images["fake_latent"]

    def generator_terms(self, fake: Tensor) -> dict[str, Tensor]:
        """L_g and β·L_g, through D (whose parameters the caller has frozen)."""
        loss = self.loss.generator_loss(self.discriminator(fake))
        return {"g_adv": loss, "g_adv_weighted": self.weight * loss}

    def discriminator_terms(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """L_D on detached inputs, with D's mean logits and accuracies."""
        real_logits, fake_logits = self.discriminator(real, fake)
        terms = {"d_loss": self.loss.discriminator_loss(real_logits, fake_logits),
                 "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
        terms["d_acc_real"], terms["d_acc_fake"] = discriminator_accuracy(real_logits, fake_logits)
        return terms

    def extra_gradients(self, real: Tensor, fake: Tensor, reduce: Callable[[Tensor], Tensor]) -> None:
        """One more step's gradients for D alone (``d_steps_per_g`` > 1), each through ``reduce``
        (the all-reduce across ranks), clipped to ``clip_val``."""
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        grads = torch.autograd.grad(self.loss.discriminator_loss(*self.discriminator(real, fake)), params)
        for p, g in zip(params, grads):
            p.grad = reduce(g)
        if self.clip_val:
            torch.nn.utils.clip_grad_norm_(params, self.clip_val)
