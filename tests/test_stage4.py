"""SODEC's GAN stage: the adversarial gradient really reaches the generator, the discriminator
learns, DDP runs, and a resumed run continues exactly."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train as train_module
from lightning_modules.losses import HingeLoss, NonSaturatingLoss
from osdic.models.discriminators import SamePaddedConv, latent_discriminator, pixel_discriminator
from tests.conftest import TINY_STAGE4, compose_config
from train import train


def _one_step(tmp_path, name, beta):
    cfg = compose_config([*TINY_STAGE4, f"model.adversary.weight={beta}", "trainer.max_steps=1",
                          "trainer.val_check_interval=1", "trainer.limit_val_batches=0"], tmp_path / name)
    _, trainer = train(cfg)
    return trainer.lightning_module


def test_adversarial_term_reaches_the_generator_and_no_frozen_weight(tmp_path):
    """One real training step with β = 1 and with β = 0 from the same seed: the generator's
    trainable weights move differently (the D call is not under no_grad), frozen ones not at all."""
    with_gan, without = _one_step(tmp_path, "beta1", 1.0), _one_step(tmp_path, "beta0", 0.0)
    generator = lambda m: {n: p for n, p in m.codec.named_parameters() if p.requires_grad}  # noqa: E731
    differs = [n for n, p in generator(with_gan).items() if not torch.equal(p, generator(without)[n])]
    assert any("lora_" in n for n in differs) and any(n.startswith("transform.") for n in differs)

    frozen = lambda m: {n: p for n, p in m.codec.named_parameters() if not p.requires_grad}  # noqa: E731
    assert frozen(with_gan), "stage 4 has frozen weights (UNet base, D_m, ViT)"
    assert all(torch.equal(p, frozen(without)[n]) for n, p in frozen(with_gan).items())


def test_generator_gradient_of_the_adversarial_term_is_nonzero_only_on_trainable_weights(tmp_path):
    cfg = compose_config(TINY_STAGE4, tmp_path / "run")
    import hydra

    module = hydra.utils.instantiate(cfg.model)
    module.objective.set_lambda(1.0)
    module.adversary.discriminator.requires_grad_(False)  # what toggle_optimizer(g_opt) does
    _, images = module.compute_losses(torch.rand(2, 3, 64, 64))
    (0.2 * module.adversary.loss.generator_loss(module.adversary.discriminator(images["fake_latent"]))).backward()
    trainable = [p for p in module.trainable_parameters()]
    lora = module.codec.backbone.unet_parameters()
    assert sum(float(p.grad.abs().sum()) for p in lora if p.grad is not None) > 0
    assert sum(float(p.grad.abs().sum()) for p in trainable if p.grad is not None) > 0
    assert all(p.grad is None for p in module.codec.parameters() if not p.requires_grad)
    assert all(p.grad is None for p in module.adversary.discriminator.parameters())


@pytest.mark.parametrize("make", [lambda: latent_discriminator([8, 16]), lambda: pixel_discriminator([8, 16])])
def test_discriminator_alone_learns_to_separate_a_fixed_pair(make):
    torch.manual_seed(0)
    disc = make()
    channels = 4 if disc.space == "latent" else 3
    losses = _train_alone(disc, torch.rand(4, channels, 32, 32), torch.rand(4, channels, 32, 32) * 0.3, 60, 2e-3)
    assert losses[-1] < 0.5 * losses[0]


def _train_alone(disc, real, fake, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    losses = []
    for _ in range(steps):
        loss = NonSaturatingLoss().discriminator_loss(*disc(real, fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


LOGITS = {"real": torch.tensor([3.0, -1.0]), "fake": torch.tensor([-2.0, 0.5])}


def _softplus(value: float) -> float:
    return math.log1p(math.exp(value))


@pytest.mark.parametrize("loss, generator, discriminator", [
    # −log σ(f) = softplus(−f);  −log σ(r) − log(1 − σ(f)) = softplus(−r) + softplus(f)
    (NonSaturatingLoss(), (_softplus(2.0) + _softplus(-0.5)) / 2,
     (_softplus(-3.0) + _softplus(1.0)) / 2 + (_softplus(-2.0) + _softplus(0.5)) / 2),
    # −mean(f);  mean(max(0, 1 − r)) + mean(max(0, 1 + f)): r = 3 is past the margin, f = −2 too
    (HingeLoss(), -(-2.0 + 0.5) / 2, (0.0 + 2.0) / 2 + (0.0 + 1.5) / 2),
])
def test_adversarial_losses_on_hand_made_logits(loss, generator, discriminator):
    assert float(loss.generator_loss(LOGITS["fake"])) == pytest.approx(generator)
    assert float(loss.discriminator_loss(LOGITS["real"], LOGITS["fake"])) == pytest.approx(discriminator)
    # both fall as their player wins: G when D calls the fake real, D when it tells them apart
    confident_fake, confident_real = torch.tensor([5.0]), torch.tensor([-5.0])
    assert loss.generator_loss(confident_fake) < loss.generator_loss(confident_real)
    assert loss.discriminator_loss(confident_fake, confident_real) < loss.discriminator_loss(confident_real, confident_fake)


def test_adversarial_loss_is_chosen_by_its_config_node(tmp_path):
    import hydra

    for model in ("sodec_stage4", "osdiff"):  # the papers' loss stays the default
        default = compose_config([f"model={model}"], tmp_path / model).model.adversary.loss
        assert type(hydra.utils.instantiate(default)) is NonSaturatingLoss
    cfg = compose_config([*TINY_STAGE4, "model/adversary/loss=hinge"], tmp_path / "hinge")
    assert type(hydra.utils.instantiate(cfg.model).adversary.loss) is HingeLoss


def test_unet_feature_discriminator_learns_on_any_crop_size(tmp_path):
    import hydra

    cfg = compose_config([*TINY_STAGE4, "model/adversary/discriminator=unet_features_tiny"], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.model)
    disc = module.adversary.discriminator
    assert disc(torch.randn(1, 4, 8, 12)).shape == (1,) and disc(torch.randn(2, 4, 16, 16)).shape == (2,)
    torch.manual_seed(0)
    losses = _train_alone(disc, torch.randn(4, 4, 8, 8) * 2, torch.zeros(4, 4, 8, 8), 40, 1e-3)
    assert sum(losses[-10:]) < sum(losses[:10])
    unet_weight = module.codec.backbone.unet.conv_in.weight
    assert not torch.equal(disc.conv_in.weight, unet_weight), "the discriminator trains its own copy"


@pytest.mark.parametrize("kernel", [3, 4])
def test_the_feature_heads_convolution_gives_what_same_padding_gives(kernel):
    """(torch warns once per process about padding="same" with an even kernel, so whether the
    warning is gone cannot be tested here in an order-independent way; the output is.)"""
    conv = SamePaddedConv(3, 5, kernel)
    reference = torch.nn.Conv2d(3, 5, kernel, padding="same")
    reference.load_state_dict(conv.state_dict())
    image = torch.randn(2, 3, 7, 10)
    torch.testing.assert_close(conv(image), reference(image))


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def test_resume_mid_stage4_continues_exactly(tmp_path):
    common = [*TINY_STAGE4, "logger=csv", "trainer.log_every_n_steps=1", "trainer.val_check_interval=4",
              "trainer.limit_val_batches=1"]
    train(compose_config([*common, "trainer.max_steps=6"], tmp_path / "straight"))
    train(compose_config([*common, "trainer.max_steps=4"], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert len(torch.load(checkpoint, weights_only=True)["optimizer_states"]) == 3  # G, aux, D
    train(compose_config([*common, "trainer.max_steps=6", f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5]
    for step in (4, 5):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), step


@pytest.mark.slow
def test_stage4_ddp_on_cpu_with_two_processes(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, str(Path(train_module.__file__).resolve().parent / "train.py"), *TINY_STAGE4,
         "trainer=ddp_cpu", "logger=csv", f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
