"""OSDiff on the tiny backbone: training, its two entropy models and two control modules,
real bitstreams, the starting-latent choice, exact resume and DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
import pytest
import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from osdic.codec.bitstream import unpack
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import export_package, load_package
import train as train_module
from tests.conftest import TINY_OSDIFF, compose_config
from train import train

#: the other entropy model and control module (the defaults are ELIC and ControlNet-XS)
HYPERPRIOR_AND_FULL_CONTROLNET = [
    "model/codec/entropy_model=hyperprior_tiny",
    "model/codec/control=controlnet",
    "model.codec.control.embedding_channels=8",
]
CHOICES = {"elic+controlnet_xs": [], "hyperprior+controlnet": HYPERPRIOR_AND_FULL_CONTROLNET}


def test_osdiff_fits_with_its_losses_and_feature_discriminator(tmp_path):
    metrics, trainer = train(compose_config([*TINY_OSDIFF, "callbacks.rate_annealing.lambda_start=2"], tmp_path / "run"))
    # the four terms raw and weighted (λ1·L_diff, λ2·R, λ3·L_feature, λ4·L_G) and D's accuracy, for
    # reading the discriminator ablation from W&B
    for term in ("diffusion", "bpp", "feature", "g_adv"):
        assert f"train/{term}" in metrics and f"train/{term}_weighted" in metrics, term
    for key in ("train/d_loss", "train/d_acc_real", "train/d_acc_fake", "val/bpp_real"):
        assert key in metrics, key
    assert metrics["train/bpp_weighted"] == pytest.approx(2.0 * metrics["train/bpp"])  # λ2 = lambda_start
    module = trainer.lightning_module
    unet = module.codec.backbone.unet
    assert not any(p.requires_grad for p in unet.parameters()), "the SD UNet stays frozen"
    assert all(p.requires_grad for p in module.codec.control.parameters())


def _osdiff(tmp_path, *overrides):
    cfg = compose_config([*TINY_OSDIFF, *overrides], tmp_path / "run")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    module.objective.set_lambda(1.0)
    return module


def test_sd_latents_reach_g_a_in_nchw(tmp_path):
    """With one thread (as each DDP process on CPU) the VAE gives a channels-last latent, on which
    oneDNN's strided 1×1 convolution in G_a corrupts the heap in its weight gradient."""
    codec = _osdiff(tmp_path).codec
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert codec.backbone.encode(torch.rand(1, 3, 64, 64)).is_contiguous()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("choice", CHOICES)
def test_control_module_starts_as_a_no_op(tmp_path, choice):
    """Zero-initialised connections: before training, the controlled UNet equals the frozen one."""
    codec = _osdiff(tmp_path, *CHOICES[choice]).codec.eval()
    y_t, y_c = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    context = codec.context.tokens(1)
    with torch.no_grad():
        assert torch.allclose(codec.denoise(y_t, y_c), codec.backbone.predict_clean_latent(y_t, 999, context), atol=1e-5)


def test_controlnet_xs_connections_reach_the_encoder_middle_block_and_decoder(tmp_path):
    """One connection per encoder stage (the UNet's skips), one after the middle block, one per
    decoder stage: at initialisation each receives a gradient, and each set, once non-zero,
    changes the prediction."""
    codec = _osdiff(tmp_path).codec.eval()
    control, unet = codec.control, codec.backbone.unet
    stages = 1 + sum(len(block.resnets) + (block.downsamplers is not None) for block in unet.down_blocks)
    assert len(control.encoder_connections) == len(control.decoder_connections) == stages
    connections = {"encoder": list(control.encoder_connections), "middle": [control.middle_connection],
                   "decoder": list(control.decoder_connections)}
    y_t, y_c = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    codec.denoise(y_t, y_c).square().mean().backward()
    for name, convs in connections.items():
        assert all(conv.weight.grad.abs().sum() > 0 for conv in convs), name
    with torch.no_grad():
        reference = codec.denoise(y_t, y_c)
        for name, convs in connections.items():
            for conv in convs:
                conv.weight.normal_(std=0.1)
            assert not torch.allclose(codec.denoise(y_t, y_c), reference, atol=1e-4), name
            for conv in convs:
                conv.weight.zero_()


@pytest.mark.parametrize("ratio, widths", [(0.2, [8, 16]), (0.5, [16, 32])])
def test_controlnet_xs_width_is_a_ratio_of_the_unets(tmp_path, ratio, widths):
    """The tiny UNet is 32, 64 wide with 8 GroupNorm groups: widths round to multiples of 8. A new
    module starts from the UNet's weights (their leading slices), as the public code's does."""
    codec = _osdiff(tmp_path, f"model.codec.control.width_ratio={ratio}").codec
    control, unet = codec.control, codec.backbone.unet
    assert [block.resnets[0].out_channels for block in control.down_blocks] == widths
    assert torch.equal(control.time_embedding.linear_1.weight, unet.time_embedding.linear_1.weight)
    assert torch.equal(control.conv_in.weight[:, :4], unet.conv_in.weight[: widths[0]])


@pytest.mark.parametrize("choice, start", [("elic+controlnet_xs", "noise"), ("elic+controlnet_xs", "noised_condition"),
                                           ("hyperprior+controlnet", "noised_condition")])
def test_file_round_trip_is_deterministic(tmp_path, choice, start):
    built = _osdiff(tmp_path, *CHOICES[choice], f"model/codec/start={start}").codec.eval()
    codec, fingerprint = load_package(export_package(built, tmp_path / "package"))
    assert type(codec.start) is type(built.start), "the package keeps the starting latent"
    path = tmp_path / "photo.osdc"
    path.write_bytes(compress_image(codec, fingerprint, torch.rand(3, 64, 96)))
    assert len(unpack(path.read_bytes()).strings) == codec.num_strings == codec.entropy_model.num_strings
    first, second = (decompress_bytes(codec, fingerprint, path.read_bytes()) for _ in range(2))
    assert first.shape == (1, 3, 64, 96) and torch.equal(first, second)


@pytest.mark.parametrize("start, consistent", [("noise", True), ("noised_condition", True), ("noised_clean", False)])
def test_starting_latent_of_training_matches_decoding_unless_asked_not_to(tmp_path, start, consistent):
    """Training knows y_0, a decoder does not. For the consistent choices the training start
    must not depend on y_0 and equal the decoder's for the same noise; ``noised_clean`` is the
    public code's mismatch, kept on purpose."""
    codec = _osdiff(tmp_path, f"model/codec/start={start}").codec.eval()
    y_c, y_0 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8) * 3
    seeded = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    training, decoding = codec.start_latent(y_c, y_0, seeded()), codec.start_latent(y_c, None, seeded())
    assert torch.equal(training, decoding) == consistent
    if start == "noised_condition":  # and it carries the condition: not pure noise
        assert not torch.equal(decoding, codec.start_latent(torch.zeros_like(y_c), None, seeded()))


def test_unet_context_is_the_empty_prompt_embedding_in_generator_and_discriminator(tmp_path):
    """SD's to_k/to_v have no bias: a zero context would feed every cross-attention layer of the
    frozen prior an input it never saw. OSDiff uses SD's own empty-prompt embedding in every
    cross-attention of the UNet and of its control module, and so does its UNet-feature
    discriminator."""
    module = _osdiff(tmp_path)
    codec = module.codec.eval()
    empty = codec.context.tokens(1)
    assert empty.shape == (1, 77, codec.backbone.cross_attention_dim) and empty.abs().sum() > 0
    seen = {}
    for part in (codec.backbone.unet, codec.control):
        for name, layer in part.named_modules():
            if isinstance(layer, Transformer2DModel):
                layer.register_forward_pre_hook(
                    lambda m, args, kwargs, key=(part, name): seen.__setitem__(key, kwargs["encoder_hidden_states"]),
                    with_kwargs=True)
    with torch.no_grad():
        codec.denoise(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
    assert {part for part, _ in seen} == {codec.backbone.unet, codec.control}
    assert all(torch.equal(context, empty.expand(2, -1, -1)) for context in seen.values())
    assert torch.equal(module.adversary.discriminator.context, empty)


def test_unet_context_that_is_not_a_text_embedding_is_a_config_error(tmp_path):
    """The context is a prompt's embedding (any prompt); an image-dependent guidance of SODEC has
    no tokens to give the UNet and is refused by name."""
    with pytest.raises(InstantiationException, match="context") as error:
        _osdiff(tmp_path, "model/codec/guidance@model.codec.context=none")
    assert "tokens(batch)" in str(error.value)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.parametrize("choice", [pytest.param(choice, marks=[pytest.mark.slow] * bool(overrides))
                                    for choice, overrides in CHOICES.items()])
def test_resume_mid_run_continues_exactly(tmp_path, choice):
    # 8 photos in batches of 4: the run stops and resumes at an epoch's end
    common = [*TINY_OSDIFF, *CHOICES[choice], "logger=csv", "trainer.log_every_n_steps=1", "data.batch_size=4",
              "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "data.val_crop_size=64"]
    train(compose_config([*common, "trainer.max_steps=3"], tmp_path / "straight"))
    train(compose_config([*common, "trainer.max_steps=2"], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose_config([*common, "trainer.max_steps=3", f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [2]
    assert resumed[2] == pytest.approx(straight[2], rel=1e-5)


@pytest.mark.slow
def test_osdiff_ddp_on_cpu_with_two_processes(tmp_path):
    """The default entropy model and control module (ELIC, ControlNet-XS) in two processes; the
    other choices share its training step and are covered by the round-trip and resume tests."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, str(Path(train_module.__file__).resolve().parent / "train.py"), *TINY_OSDIFF,
         "trainer=ddp_cpu", "logger=csv", "data.val_crop_size=64", f"hydra.run.dir={run_dir}",
         f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_decode_breakdown_gives_the_honest_total_and_the_papers_parts(tmp_path):
    """OSDiff's 0.060 s left entropy decoding out: the breakdown reports both sums."""
    from osdic.metrics.latency import decode_breakdown

    codec = _osdiff(tmp_path).codec.eval()
    codec.update(force=True)
    started = time.perf_counter()
    figures = decode_breakdown(codec, torch.rand(1, 3, 64, 64), repeat=1, warmup=0)
    elapsed = time.perf_counter() - started
    parts = ["entropy decoding (CPU)", "G_s (synthesis)", "start latent", "control module + UNet (one step)",
             "D_SD (SD VAE decoder)"]
    assert list(figures) == [*parts, "total", "total without entropy decoding (the OSDiff paper's parts)"]
    assert figures["total"] <= elapsed, "seconds of one decode each, within the call's own time"
    assert figures["total"] == pytest.approx(sum(figures[part] for part in parts))
    assert figures["total without entropy decoding (the OSDiff paper's parts)"] == pytest.approx(
        sum(figures[part] for part in parts[1:]))
