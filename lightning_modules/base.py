"""What every training stage shares: the optimisation step, metrics, logging, checkpoints.

A stage subclass says only what differs: which parameters train (:meth:`trainable_parameters`),
and what the losses are (:meth:`compute_losses`). Optimisation is manual because every stage has
at least two optimizers (the main one and compressai's aux optimizer for the entropy-bottleneck
quantiles; a stage given an adversary — SODEC's final stage, OSDiff — adds the discriminator's,
lightning_modules.adversarial). The losses are back-propagated in one pass: they touch disjoint
parameters, and one backward keeps DDP's gradient reduction complete.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Iterable, NotRequired, Sequence, TypedDict

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from pytorch_lightning.loggers import WandbLogger
from torchmetrics import MeanMetric

from lightning_modules.adversarial import Adversary
from lightning_modules.objective import RateDistortionObjective
from osdic.codec.bitstream import CompressedImage, pack
from osdic.metrics.quality import MetricNotAvailable, metric_spec, quantize_8bit
from osdic.models.entropy import ENTROPY_MODELS
from osdic.checks import ConfigError, require_positive, require_supported_precision
from training.config import RANDOM_INIT, STARTED_FROM_RANDOM
from osdic.utils.modules import external_keys, resize_buffers_like
from osdic.utils.untrusted import load_checkpoint

log = logging.getLogger(__name__)


def batch_seed(run_seed: int, rank: int, step: int) -> int:
    """The torch seed of training batch ``step`` on ``rank``: the step's noise (rate-proxy noise,
    discriminator timesteps) is a function of (run seed, rank, batch), so a resumed run draws
    exactly what an uninterrupted one would have (and training.bare_loop what training_step does)."""
    return hash((run_seed, rank, step)) % 2**63


class StageImages(TypedDict):
    """What a stage's ``compute_losses`` hands to logging and to the adversarial step."""

    x_hat: Tensor                     # the final reconstruction
    fake_latent: NotRequired[Tensor]  # the generator's latent a latent/UNet-feature discriminator judges
    real_latent: NotRequired[Tensor]  # its real counterpart, when the stage already has it


class CompressionLightningModule(pl.LightningModule):
    """``codec`` arrives built (its config node is ``model.codec``): it needs nothing from the
    module, and an exported package rebuilds the same codec from its own config without one.
    ``stage`` names the training stage (``sodec_stage2``, …), which is a config value rather
    than a class because stages differ only in their switches; checkpoints and codec packages
    record it."""

    def __init__(
        self,
        stage: str,
        codec: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        aux_optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        gradient_clip_val: float | None = 1.0,
        val_metrics: Sequence[str] = ("psnr", "ms_ssim"),
        allow_random_weights: bool = False,
        num_logged_images: int = 4,
        init_from: str | None = None,
        init_prefix_map: dict[str, str] | None = None,
        predecessor_stage: str | None = None,
        entropy_model_lr: float | None = None,
        rate_in_loss: bool = True,
        adversary: Adversary | None = None,
    ):
        """``init_from``: the checkpoint of the stage this one starts from (``predecessor_stage``,
        which the checkpoint must name; or this stage's own, to continue one), or
        :data:`RANDOM_INIT` for smoke tests, which every output of the run then reports
        (``started_from_random``). ``entropy_model_lr``: the main optimizer's learning rate for
        the entropy models' networks (null: the same as every other parameter). An entropy model
        follows a moving y; at the transforms' rate it can lag far behind it (BENCHMARKS.md,
        learning speed). ``rate_in_loss``: whether λ·R is part of the loss (a stage whose entropy
        models are frozen only measures the rate). ``adversary``: the discriminator trained beside
        the generator, with its loss, optimizer and β (None: no GAN)."""
        super().__init__()
        self.automatic_optimization = False
        self.stage = stage
        self.codec = codec
        self.adversary = adversary.bind(codec) if adversary is not None else None
        self.optimizer_factory, self.aux_optimizer_factory = optimizer, aux_optimizer
        self._configured_roles: list[str] = []  # configure_optimizers' order, which self.optimizers() keeps
        self.scheduler_factory = scheduler
        self.gradient_clip_val = gradient_clip_val
        self.entropy_model_lr = None if entropy_model_lr is None else require_positive("entropy_model_lr",
                                                                                         entropy_model_lr)
        self.num_logged_images = num_logged_images
        try:
            metrics = {name: metric_spec(name).build(allow_random_weights) for name in val_metrics}
        except ConfigError as error:
            raise ConfigError("val_metrics", error.message) from None
        self.val_metrics = metrics
        self.val_metric_networks = nn.ModuleDict({n: m for n, m in metrics.items() if isinstance(m, nn.Module)})
        # per-image means, of x̂ and (SODEC) of the fidelity image x̂_f: `val/<metric>`, `val/fidelity_<metric>`
        self.val_means = nn.ModuleDict({key: MeanMetric() for key in
                                        [*metrics, *(f"fidelity_{name}" for name in metrics), "bpp_real"]})
        self._val_updated: set[str] = set()
        self._not_available_warned: set[str] = set()
        #: L = D + λ·R: holds λ (set by the rate-annealing callback) and the rates it observed
        self.objective = RateDistortionObjective(rate_in_loss)
        self.init_from, self.init_prefix_map = init_from, dict(init_prefix_map or {})
        self.predecessor_stage = predecessor_stage
        #: whether this model, or a stage it descends from, started from random weights instead of
        #: its predecessor (saved in checkpoints, inherited through init_from, written into packages)
        self.started_from_random = False
        self._initialised_from_previous_stage = False

    # ------------------------------------------------------------------ stage interface
    def compute_losses(self, x: Tensor) -> tuple[dict[str, Tensor], StageImages]:
        """→ (scalar loss terms incl. "loss", the images the step logs and its discriminator reads)."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def aux_parameters(self) -> list[nn.Parameter]:
        """The entropy bottleneck's quantiles, when this stage trains them."""
        return [p for p in self.codec.aux_parameters() if p.requires_grad]

    # ----------------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        # before the optimizers exist (and before a validation that precedes training); a
        # resumed run (ckpt_path) then overwrites these weights
        if stage in ("fit", "validate") and self.init_from and not self._initialised_from_previous_stage:
            if self.init_from == RANDOM_INIT:
                self.started_from_random = True
                log.warning("%s starts from RANDOM weights (model.init_from=random), not from a trained %s: its "
                            "metrics, checkpoints and codec package say so", self.stage, self.predecessor_stage)
            else:
                self.load_previous_stage(self.init_from, self.init_prefix_map)
            self._initialised_from_previous_stage = True

    def load_previous_stage(self, path: str, prefix_map: dict[str, str]) -> dict[str, list[str]]:
        """Initialise from an earlier stage's checkpoint: keys renamed by ``prefix_map`` (e.g.
        stage 1's ``codec.`` → ``codec.vae_codec.``), only keys this module has; a key the
        checkpoint has but this module lacks is an error, keys this stage adds are reported."""
        checkpoint = load_checkpoint(path)
        previous_stage = checkpoint.get("stage", "unnamed stage")
        if self.predecessor_stage and "stage" in checkpoint and previous_stage not in (self.predecessor_stage,
                                                                                       self.stage):
            raise ConfigError("model.init_from", f"{path} is a checkpoint of {previous_stage}; {self.stage} starts "
                                                 f"from {self.predecessor_stage} (or continues {self.stage})")
        self.started_from_random = bool(checkpoint.get("started_from_random", False))
        state = {}
        for key, value in checkpoint.get("state_dict", checkpoint).items():
            old = next((p for p in prefix_map if key.startswith(p)), None)
            state[prefix_map[old] + key[len(old):] if old else key] = value
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected or not state:
            raise KeyError(f"init_from {path}: {len(unexpected)} keys this module does not have "
                           f"(wrong stage or init_prefix_map?): {unexpected[:8]}")
        lora = next((k for k in state if ".lora_A." in k and k in own and state[k].shape != own[k].shape), None)
        if lora is not None:  # one line instead of a size mismatch per LoRA layer
            saved, wanted = state[lora].shape[0], own[lora].shape[0]
            raise ConfigError("model.codec.backbone.lora_rank", f"init_from {path}: this checkpoint has LoRA rank "
                              f"{saved}, the config asks for {wanted}; set model.codec.backbone.lora_rank={saved} "
                              f"or start from a checkpoint of rank {wanted}")
        missing = sorted(set(own) - set(state) - external_keys(self))
        resize_buffers_like(self, state)
        self.load_state_dict(state, strict=False)
        new_parts = sorted({".".join(k.split(".")[:2]) for k in missing})
        log.info("init_from %s (%s): loaded %d tensors; %d new in %s (%s)", path, previous_stage, len(state),
                 len(missing), self.stage, ", ".join(new_parts))
        return {"loaded": sorted(state), "missing": missing}

    def on_train_batch_start(self, batch: Tensor, batch_idx: int) -> None:
        torch.manual_seed(batch_seed(self._run_seed, self.global_rank, self.trainer.global_step))

    def on_fit_start(self) -> None:
        self._run_seed = torch.initial_seed()
        require_supported_precision("trainer.precision", self.trainer.precision)
        # known only now (a predecessor's checkpoint may carry it); other ranks hold a dummy W&B run
        if self.started_from_random and self.trainer.is_global_zero:
            for logger in self.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.tags = (*(logger.experiment.tags or ()), STARTED_FROM_RANDOM)

    def optimizer_roles(self) -> list[str]:
        """The optimizers this stage trains with, in :meth:`configure_optimizers`' order: "main",
        "aux" when it trains the entropy bottleneck's quantiles, "discriminator" with an adversary."""
        return ["main", *(["aux"] if self.aux_parameters() else []),
                *(["discriminator"] if self.adversary is not None else [])]

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """A fresh optimizer per role of :meth:`optimizer_roles`."""
        build = {"main": lambda: self.optimizer_factory(self._parameter_groups()),
                 "aux": lambda: self.aux_optimizer_factory(self.aux_parameters()),
                 "discriminator": lambda: self.adversary.optimizer()}
        return {role: build[role]() for role in self.optimizer_roles()}

    def build_scheduler(self, main: torch.optim.Optimizer) -> Any | None:
        """The main optimizer's learning-rate schedule (stepped once per training batch), if any."""
        return None if self.scheduler_factory is None else self.scheduler_factory(main)

    def configure_optimizers(self):
        optimizers = self.build_optimizers()
        self._configured_roles = list(optimizers)
        scheduler = self.build_scheduler(optimizers["main"])
        if scheduler is None:
            return list(optimizers.values())
        return list(optimizers.values()), [{"scheduler": scheduler, "interval": "step"}]

    def _parameter_groups(self) -> list:
        """The main optimizer's parameters: one group, or two when the entropy models have their own
        learning rate (a stage whose entropy models are frozen has one)."""
        parameters = list(self.trainable_parameters())
        if self.entropy_model_lr is None:
            return parameters
        entropy = {id(p) for m in self.modules() if isinstance(m, ENTROPY_MODELS) for p in m.parameters()}
        groups = [{"params": [p for p in parameters if id(p) not in entropy]},
                  {"params": [p for p in parameters if id(p) in entropy], "lr": self.entropy_model_lr}]
        return [group for group in groups if group["params"]]

    def _optimizers_by_role(self) -> dict[str, Any]:
        """Lightning's wrapped optimizers under their roles: "main", and "aux", "discriminator"
        where this stage has them (the roles recorded when they were configured: finding the
        trainable quantiles again cost ~0.7 ms a batch)."""
        opts = self.optimizers()
        return dict(zip(self._configured_roles, opts if isinstance(opts, (list, tuple)) else [opts]))

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        optimizers = self._optimizers_by_role()
        main, aux, discriminator = optimizers["main"], optimizers.get("aux"), optimizers.get("discriminator")
        if self.adversary is None:
            terms, _ = self.compute_losses(batch)
            total = terms["loss"]
        else:
            # ---------------- generator block: D frozen, the gradient flows through D into G
            self.toggle_optimizer(main)
            terms, images = self.compute_losses(batch)
            real, fake = self.adversary.inputs(batch, images, self.codec)
            if self.adversary.active(self.global_step):  # global_step: training batches
                terms.update(self.adversary.generator_terms(fake))
                terms["loss"] = terms["loss"] + terms["g_adv_weighted"]
            self.untoggle_optimizer(main)
            # ---------------- discriminator block: the fake detached (sg), G untouched
            self.toggle_optimizer(discriminator)
            terms.update(self.adversary.discriminator_terms(real.detach(), fake.detach()))
            self.untoggle_optimizer(discriminator)
            total = terms["loss"] + terms["d_loss"]
        total = self.with_aux_loss(terms, total, trains_aux=aux is not None)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if self.gradient_clip_val:
            self.clip_gradients(main, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        if discriminator is not None and self.adversary.clip_val:
            self.clip_gradients(discriminator, gradient_clip_val=self.adversary.clip_val, gradient_clip_algorithm="norm")
        main.step()
        self.step_uncounted(*(opt for opt in (aux, discriminator) if opt is not None))
        for _ in range(self.adversary.d_steps_per_g - 1 if self.adversary is not None else 0):
            self.adversary.extra_gradients(real.detach(), fake.detach(), self._mean_over_ranks)
            self.step_uncounted(discriminator)
        self._step_schedulers()
        terms["lr"] = torch.tensor(main.param_groups[0]["lr"])
        self.log_terms("train", terms, batch_size=batch.shape[0])
        return terms["loss"]

    def with_aux_loss(self, terms: dict[str, Tensor], total: Tensor, trains_aux: bool) -> Tensor:
        """``total`` plus compressai's aux loss (the entropy bottleneck's quantiles, logged as
        ``aux_loss``) when an "aux" optimizer trains them: training_step and the bare loop
        (training/bare_loop.py) both take their total from here."""
        if not trains_aux:
            return total
        terms["aux_loss"] = self.codec.aux_loss()
        return total + terms["aux_loss"]

    def _mean_over_ranks(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="mean") if self.trainer.world_size > 1 else tensor

    @staticmethod
    def step_uncounted(*optimizers) -> None:
        """Step optimizers without advancing ``trainer.global_step``: Lightning counts every
        wrapped optimizer step, and ``max_steps``, ``val_check_interval`` and checkpoints must
        count training batches. (bf16/fp32 need no loss scaler, so the raw step is exact.)"""
        for opt in optimizers:
            opt.optimizer.step()

    def log_terms(self, split: str, terms: dict[str, Tensor], batch_size: int) -> None:
        on_step = split == "train"
        if on_step and not self.training_logs_written():
            return
        self.log_dict(
            {f"{split}/{k}": v.detach().float() for k, v in terms.items()},
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=False,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        if on_step and self.objective.rate_in_loss and self.objective.lambda_is_set:
            self.log(f"{split}/lambda", self.objective.rate_lambda, on_step=True, batch_size=batch_size)

    def training_logs_written(self) -> bool:
        """Whether this training batch's values are logged: on the batches the loggers write
        (every ``log_every_n_steps``, and when the run stops) and on the last of ``max_steps``, whose
        values the run's final metrics (final_metrics.json, a sweep's objective) hold. Lightning's
        ``self.log`` costs the same on the batches it never writes: logging every batch cost the
        demo's small HiFiC ~10 % of its batches per CPU second against the bare loop (BENCHMARKS.md,
        learning speed). Called after the main optimizer's step: ``global_step`` counts this batch."""
        trainer = self.trainer
        last_batch = 0 < trainer.max_steps <= self.global_step
        return last_batch or trainer._logger_connector.should_update_logs

    # --------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        # Real coding needs CDF tables for the current weights.
        self.codec.update(force=True)
        # A metric reset under trainer.validate()'s inference mode leaves inference tensors that
        # a later validation inside fit() (no inference mode) could not update in place.
        with torch.inference_mode(False):
            for metric in self.val_means.values():
                metric.reset()

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        losses, images = self.compute_losses(batch)
        self.log_terms("val", losses, batch_size=batch.shape[0])
        self._update_quality("", quantize_8bit(images["x_hat"]), batch)
        if "x_hat_f" in images:
            self._update_quality("fidelity_", quantize_8bit(images["x_hat_f"]), batch)
        self._update_mean("bpp_real", self.real_bpp(batch))
        if batch_idx == 0:
            self.log_images("val", {"original": batch, **images})

    def _update_mean(self, key: str, values: Tensor, weight: float = 1.0) -> None:
        self.val_means[key].update(values, weight=weight)
        self._val_updated.add(key)

    def _update_quality(self, prefix: str, x_hat: Tensor, x: Tensor) -> None:
        for name, metric in self.val_metrics.items():
            try:
                self._update_mean(prefix + name, metric(x_hat, x.float()).float())
            except MetricNotAvailable as exc:
                # weight 0: counted as an update on this rank, adds nothing to the mean
                self._update_mean(prefix + name, x.new_zeros(x.shape[0]), weight=0.0)
                if name not in self._not_available_warned:
                    self._not_available_warned.add(name)
                    warnings.warn(f"val/{name} leaves out validation images it is not defined for ({exc}): it is "
                                  f"the mean over the others, NaN when there is none", RuntimeWarning)

    def on_validation_epoch_end(self) -> None:
        results = {f"val/{key}": self.val_means[key].compute() for key in sorted(self._val_updated)}
        self.log_dict(results, sync_dist=False)  # torchmetrics already synced across ranks
        if "val/bpp_real" in results:
            self.objective.record_validation(float(results["val/bpp_real"]))
        self._val_updated.clear()  # the metrics themselves are reset when the next validation starts

    def real_bpp(self, batch: Tensor) -> Tensor:
        """Bits per pixel of the real files (header included) for each image of the batch."""
        coded = self.codec.compress(batch)
        sizes = []
        for i in range(batch.shape[0]):
            strings = tuple(s[i] for s in coded["strings"])
            data = pack(CompressedImage(batch.shape[-2], batch.shape[-1], bytes(8), strings))
            sizes.append(len(data) * 8 / (batch.shape[-2] * batch.shape[-1]))
        return torch.tensor(sizes, device=batch.device)

    def log_images(self, split: str, images: dict[str, Tensor]) -> None:
        """A grid per image (columns: original, then each reconstruction) to loggers that take
        images; tensors of another shape than the original (latents) are left out."""
        if self.num_logged_images <= 0 or self.global_rank != 0:
            return
        loggers = [lg for lg in self.loggers if hasattr(lg, "log_image")]
        if not loggers:
            return
        shape = images["original"].shape
        images = {name: image for name, image in images.items() if image.shape == shape}
        n = min(self.num_logged_images, next(iter(images.values())).shape[0])
        rows = [torch.cat([quantize_8bit(img[i]).cpu() for img in images.values()], dim=-1) for i in range(n)]
        caption = " | ".join(images)
        for logger in loggers:
            logger.log_image(key=f"{split}/reconstructions", images=rows, caption=[caption] * n, step=self.global_step)

    # -------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Frozen external weights (LPIPS, the pretrained SD backbone) are rebuilt from their
        source; trainable ones (LoRA) and everything else are kept."""
        skip = external_keys(self)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in skip}
        checkpoint["stage"] = self.stage
        checkpoint["started_from_random"] = self.started_from_random

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.started_from_random = bool(checkpoint.get("started_from_random", False))
        own = self.state_dict()
        state = checkpoint["state_dict"] = {**checkpoint["state_dict"], **{k: own[k] for k in external_keys(self)}}
        state.pop("batches_seen", None)  # the adversary's own batch count, before global_step was the one
        resize_buffers_like(self, state)
