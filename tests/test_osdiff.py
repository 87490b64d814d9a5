"""OSDiff on the tiny backbone: training, real bitstreams, the starting-latent choice."""

from __future__ import annotations

import hydra
import pytest
import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from codec.image_codec import compress_image, decompress_bytes
from codec.package import export_package, load_package
from tests.conftest import TINY_OSDIFF, compose_config
from train import train


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
    module.rate_lambda = 1.0
    return module


def test_control_module_starts_as_a_no_op(tmp_path):
    """Zero-initialised connections: before training, the controlled UNet equals the frozen one."""
    codec = _osdiff(tmp_path).codec.eval()
    y_t, y_c = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    context = codec.context.tokens(1)
    with torch.no_grad():
        assert torch.allclose(codec.denoise(y_t, y_c), codec.backbone.predict_clean_latent(y_t, 999, context), atol=1e-5)


@pytest.mark.parametrize("start", ["noise", "noised_condition"])
def test_file_round_trip_is_deterministic(tmp_path, start):
    codec = _osdiff(tmp_path, f"model.osdiff.start={start}").codec.eval()
    codec, fingerprint = load_package(export_package(codec, tmp_path / "package"))
    data = compress_image(codec, fingerprint, torch.rand(3, 64, 96))
    first, second = decompress_bytes(codec, fingerprint, data), decompress_bytes(codec, fingerprint, data)
    assert first.shape == (1, 3, 64, 96) and torch.equal(first, second)


@pytest.mark.parametrize("start, consistent", [("noise", True), ("noised_condition", True), ("noised_clean", False)])
def test_starting_latent_of_training_matches_decoding_unless_asked_not_to(tmp_path, start, consistent):
    """Training knows y_0, a decoder does not. For the consistent choices the training start
    must not depend on y_0 and equal the decoder's for the same noise; ``noised_clean`` is the
    public code's mismatch, kept on purpose."""
    codec = _osdiff(tmp_path, f"model.osdiff.start={start}").codec.eval()
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
    assert torch.equal(module.discriminator.context, empty)
