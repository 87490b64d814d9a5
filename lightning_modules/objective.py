"""The rate–distortion objective a stage trains with, and the one owner of λ.

L = D + λ·R, CompressAI's ``RateDistortionLoss`` in spirit: the stage computes its distortion
terms, the objective adds the rate terms (``bpp``, the estimate the gradient follows, and
``bpp_rounded``, the rate of the rounded latents the files code) and λ·R. λ is a value the
objective holds; the rate-annealing callback (callbacks/rate_annealing.py) is its scheduler: it
sets λ through :meth:`RateDistortionObjective.set_lambda` before every batch and reads the rates
the objective observed (:attr:`training_bpp`, :attr:`validation_bpp`) — no metric keys between
them. A stage whose rate is not trained (SODEC's stage 2) measures the rate all the same.
"""

from __future__ import annotations

from torch import Tensor

from osdic.models.entropy import rate_terms


class RateDistortionObjective:
    def __init__(self, rate_in_loss: bool = True):
        #: whether λ·R is part of the loss (a stage with a frozen entropy model only measures R)
        self.rate_in_loss = rate_in_loss
        self._rate_lambda: float | None = None
        #: the last training batch's rate of the rounded latents on this rank (bpp, detached)
        self.training_bpp: Tensor | None = None
        #: the last validation's bits per pixel of the real files (all ranks' images)
        self.validation_bpp: float | None = None

    def set_lambda(self, value: float) -> None:
        self._rate_lambda = float(value)

    @property
    def rate_lambda(self) -> float:
        if self._rate_lambda is None:
            raise RuntimeError("λ is not set: the rate term needs the rate-annealing callback "
                               "(callbacks: rate_annealing), which sets it before every batch")
        return self._rate_lambda

    @property
    def lambda_is_set(self) -> bool:
        return self._rate_lambda is not None

    def rate(self, codec_output: dict, num_pixels: int, training: bool) -> tuple[dict[str, Tensor], Tensor | float]:
        """(the rate terms to log, the rate's part of the loss: λ·bpp, or 0 when the rate is not trained)."""
        terms = rate_terms(codec_output, num_pixels)
        if training:
            self.training_bpp = terms.get("bpp_rounded", terms["bpp"]).detach()
        if not self.rate_in_loss:
            return terms, 0.0
        terms["bpp_weighted"] = self.rate_lambda * terms["bpp"]
        return terms, terms["bpp_weighted"]

    def record_validation(self, bpp_real: float) -> None:
        self.validation_bpp = float(bpp_real)
