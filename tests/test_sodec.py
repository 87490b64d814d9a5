"""SODEC's stages 2 and 3 on the tiny backbone: training, chaining, variants, the decode path."""

from __future__ import annotations

import json
import time

import hydra
import pytest
import torch
from torch import nn

from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import CONFIG_FILE, export_package, load_package
from osdic.checks import ConfigError, MissingWeightsError
from osdic.models.backbone import DiffusionBackbone
from tests.conftest import TINY_SODEC, TINY_STAGE1, compose_config
from train import train
from training.config import instantiate_node


def _module(tmp_path, *overrides, stage="sodec_stage3"):
    cfg = compose_config([f"model={stage}", *TINY_SODEC, *overrides], tmp_path / "run")
    module = instantiate_node(cfg.model, "model")
    module.objective.set_lambda(1.0)
    return module


def test_stages_chain_from_checkpoints(tmp_path):
    """Stage 1 → 2 → 3, each from the previous stage's last checkpoint: stage 2 maps stage 1's
    codec into its VAE compression module; stage 3 takes stage 2's keys unchanged."""
    _, t1 = train(compose_config(TINY_STAGE1, tmp_path / "s1"))
    s1_ckpt = tmp_path / "s1" / "checkpoints" / "last.ckpt"
    s1_encoder = torch.load(s1_ckpt, weights_only=True)["state_dict"]["codec.encoder.net.1.weight"]

    metrics2, t2 = train(compose_config(["model=sodec_stage2", *TINY_SODEC, f"model.init_from={s1_ckpt}"], tmp_path / "s2"))
    stage2 = t2.lightning_module
    assert torch.equal(stage2.codec.vae_codec.encoder.net[1].weight, s1_encoder), "frozen E kept stage 1's weights"
    assert "val/bpp_real" in metrics2 and "train/bpp" in metrics2
    assert "train/lambda" not in metrics2, "stage 2 has no rate term, so no λ to report"

    s2_ckpt = tmp_path / "s2" / "checkpoints" / "last.ckpt"
    assert torch.load(s2_ckpt, weights_only=True)["stage"] == "sodec_stage2", "one module, named by its config"
    metrics3, t3 = train(compose_config(["model=sodec_stage3", *TINY_SODEC, f"model.init_from={s2_ckpt}",
                                          "callbacks/rate_annealing=exponential", "callbacks.rate_annealing.num_steps=4"],
                                         tmp_path / "s3"))
    assert metrics3["train/lambda"] > 0.5 and "train/align_mse" in metrics3

    assert torch.load(tmp_path / "s3" / "checkpoints" / "last.ckpt", weights_only=True)["stage"] == "sodec_stage3"
    assert json.loads((tmp_path / "s3" / "codec" / CONFIG_FILE).read_text())["stage"] == "sodec_stage3"

    report = t3.lightning_module.load_previous_stage(str(s2_ckpt), {})
    assert report["missing"] == [], "stage 3 has exactly stage 2's parts"


def test_a_chain_that_starts_from_random_weights_says_so_in_its_checkpoints_packages_and_evaluations(tmp_path):
    from osdic.codec.package import package_warnings
    from osdic.metrics.evaluate_codecs import codec_warnings
    from training.config import STARTED_FROM_RANDOM

    train(compose_config(["model=sodec_stage2", *TINY_SODEC], tmp_path / "s2"))  # init_from=random
    s2_ckpt = tmp_path / "s2" / "checkpoints" / "last.ckpt"
    assert torch.load(s2_ckpt, weights_only=True)["started_from_random"]
    train(compose_config(["model=sodec_stage3", *TINY_SODEC, f"model.init_from={s2_ckpt}"], tmp_path / "s3"))
    for run in ("s2", "s3"):  # stage 3 descends from the random stage 2
        assert any(STARTED_FROM_RANDOM in w for w in package_warnings(tmp_path / run / "codec")), run
        assert codec_warnings(tmp_path / run / "checkpoints" / "last.ckpt"), run


def test_init_from_the_wrong_stage_or_without_the_key_mapping_is_refused(tmp_path):
    _, _ = train(compose_config(TINY_STAGE1, tmp_path / "s1"))
    stage1 = str(tmp_path / "s1" / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match="is a checkpoint of sodec_stage1; sodec_stage3 starts from sodec_stage2") as error:
        _module(tmp_path).load_previous_stage(stage1, {"codec.": "codec.vae_codec."})
    assert error.value.key == "model.init_from"
    module = _module(tmp_path, "model.init_prefix_map={}", stage="sodec_stage2")  # stage-1 keys without the mapping
    with pytest.raises(KeyError, match="init_prefix_map"):
        module.load_previous_stage(stage1, {})


def test_init_from_a_checkpoint_of_another_lora_rank_says_so_in_one_line(tmp_path):
    checkpoint = tmp_path / "rank4.ckpt"
    torch.save({"state_dict": _module(tmp_path, "model.codec.backbone.lora_rank=4").state_dict()}, checkpoint)
    with pytest.raises(ConfigError, match="this checkpoint has LoRA rank 4, the config asks for 8") as error:
        _module(tmp_path, "model.codec.backbone.lora_rank=8").load_previous_stage(str(checkpoint), {})
    assert error.value.key == "model.codec.backbone.lora_rank" and "\n" not in str(error.value)


@pytest.mark.parametrize("guidance", ["none", "text_tiny", "text_caption_tiny", "hyperprior_tiny", "fgm_tiny"])
def test_each_guidance_variant_trains_a_step(tmp_path, guidance):
    module = _module(tmp_path, f"model/codec/guidance={guidance}")
    x = torch.rand(2, 3, 64, 64)
    terms, images = module.compute_losses(x)
    terms["loss"].backward()
    assert images["x_hat"].shape == x.shape
    guidance_grads = [p.grad for p in module.codec.guidance.parameters() if p.requires_grad]
    if not guidance.startswith("text"):  # a text embedding has no trainable part
        assert guidance_grads and all(g is not None for g in guidance_grads)
        assert sum(float(g.abs().sum()) for g in guidance_grads) > 0, "the guidance receives the loss's gradient"
    assert all(p.grad is not None for p in module.codec.backbone.unet_parameters())


@pytest.mark.parametrize("guidance, built", [("none", "NullGuidance"), ("text_tiny", "TextGuidance"),
                                              ("text_caption_tiny", "CaptionGuidance"),
                                              ("hyperprior_tiny", "HyperpriorGuidance"), ("fgm_tiny", "FidelityGuidance")])
def test_each_guidance_config_builds_the_module_it_names(tmp_path, guidance, built):
    assert type(_module(tmp_path, f"model/codec/guidance={guidance}").codec.guidance).__name__ == built


def test_lora_rank_sets_the_shape_of_the_lora_matrices_and_survives_export(tmp_path):
    from osdic.codec.package import export_package, load_package

    module = _module(tmp_path, "model.codec.backbone.lora_rank=3", "model.codec.backbone.lora_targets=[to_q,to_v]")
    lora = {n: p for n, p in module.codec.backbone.unet.named_parameters() if "lora_" in n}
    assert lora and all((p.shape[0] if "lora_A" in n else p.shape[1]) == 3 for n, p in lora.items())
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == {"to_q", "to_v"}
    codec, _ = load_package(export_package(module.codec.eval(), tmp_path / "package"))
    assert codec.backbone.constructor_arguments["lora_rank"] == 3, "the package's config rebuilds rank-3 LoRA layers"
    exported = {n: p for n, p in codec.backbone.unet.named_parameters() if "lora_" in n}
    assert exported.keys() == lora.keys()
    assert all(torch.equal(exported[n], lora[n].detach()) for n in lora)


@pytest.mark.parametrize("ablation, trained", [([], True), (["model.train_vae_module=false"], False)])
def test_the_frozen_vae_strategy_freezes_e_h_a_and_p(tmp_path, ablation, trained):
    module = _module(tmp_path, *ablation)
    vae = module.codec.vae_codec
    parts = {"E": vae.encoder, "H_a": vae.entropy_model.hyper_encoder, "P": vae.entropy_model.entropy_parameters}
    optimizers = module.configure_optimizers()  # the module's own optimizers, as Lightning builds them
    optimised = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
    for part in parts.values():
        assert all((id(p) in optimised) == trained and p.requires_grad == trained for p in part.parameters())
    before = {name: [p.detach().clone() for p in part.parameters()] for name, part in parts.items()}
    terms, _ = module.compute_losses(torch.rand(2, 3, 64, 64))
    (terms["loss"] + (module.codec.aux_loss() if module.aux_parameters() else 0)).backward()
    for opt in optimizers:
        opt.step()
    for name, part in parts.items():
        unchanged = all(torch.equal(b, p) for b, p in zip(before[name], part.parameters()))
        assert unchanged != trained, f"{name} {'did not train' if trained else 'changed'}"


@pytest.mark.parametrize("alignment", ["none", "mse", "mse_lpips", "merged"])
def test_each_alignment_variant_shapes_the_loss(tmp_path, alignment):
    lpips = ["model.distortion.lpips_weight=2", "allow_random_weights=true"] if alignment == "mse_lpips" else []
    module = _module(tmp_path, f"model/alignment={alignment}", *lpips)
    torch.manual_seed(0)
    terms, _ = module.compute_losses(torch.rand(2, 3, 64, 64))
    base = terms["distortion"] + module.objective.rate_lambda * terms["bpp"]
    expected = {
        "none": base,
        "mse": base + 30 * terms["align_mse"],
        "mse_lpips": base + 30 * (terms["align_mse"] + terms.get("align_lpips", 0)),
        "merged": base + terms["align_mse"] + (2 * terms.get("align_lpips", 0)),
    }[alignment]
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_distortion_is_measured_in_its_configured_image_range(tmp_path):
    """k_M = 1 is OSEDiff's weight for MSE on [−1, 1]: 4× the MSE of the same images on [0, 1]."""
    module = _module(tmp_path)
    assert module.distortion.image_range == (-1.0, 1.0)
    x, x_hat = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert float(module.distortion(x_hat, x)["mse"]) == pytest.approx(4 * float(torch.mean((x_hat - x) ** 2)))
    unit = _module(tmp_path, "model.distortion.image_range=[0,1]")
    assert float(unit.distortion(x_hat, x)["mse"]) == pytest.approx(float(torch.mean((x_hat - x) ** 2)))


def test_stage2_trains_only_lora_and_new_modules(tmp_path):
    module = _module(tmp_path, stage="sodec_stage2")
    frozen = {
        "E": module.codec.vae_codec.encoder, "H_a and P": module.codec.vae_codec.entropy_model,
        "UNet base": module.codec.backbone.unet,
        "D_m": module.codec.backbone.vae, "ViT": module.codec.guidance.vit,
    }
    before = {name: {k: v.clone() for k, v in m.state_dict().items() if "lora_" not in k} for name, m in frozen.items()}
    lora_before = [p.clone() for p in module.codec.backbone.unet_parameters()]
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        module.compute_losses(torch.rand(2, 3, 64, 64))[0]["loss"].backward()
        optimizer.step()
    for name, m in frozen.items():
        after = {k: v for k, v in m.state_dict().items() if "lora_" not in k}
        assert all(torch.equal(before[name][k], after[k]) for k in after), f"{name} changed"
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, module.codec.backbone.unet_parameters()))
    trainable = {id(p) for p in module.trainable_parameters()}
    assert not any(id(p) in trainable for m in frozen.values() for n, p in m.named_parameters() if "lora_" not in n)


@pytest.fixture
def pretrained_tiny_backbone(tmp_path):
    """A tiny backbone saved with save_pretrained, to load through the real from_pretrained path."""
    cfg = compose_config(["model=sodec_stage2", *TINY_SODEC], tmp_path / "cfg")
    backbone = hydra.utils.instantiate(cfg.model.codec.backbone, lora_rank=None)
    directory = tmp_path / "tiny-sd"
    backbone.unet.save_pretrained(directory / "unet")
    backbone.vae.save_pretrained(directory / "vae")
    from diffusers import DDPMScheduler

    DDPMScheduler.from_config(dict(cfg.model.codec.backbone.scheduler_config)).save_pretrained(directory / "scheduler")
    return directory


def test_decode_path_through_a_file_with_a_pretrained_backbone(tmp_path, pretrained_tiny_backbone):
    """The package names the backbone instead of storing it, keeps the LoRA, and the same file
    decodes identically twice through entropy decoding → D_a → FGM → T_s → UNet → D_m."""
    module = _module(tmp_path, f"model.codec.backbone.pretrained={pretrained_tiny_backbone}",
                     "model.codec.backbone.unet_config=null", "model.codec.backbone.vae_config=null",
                     "model.codec.backbone.scheduler_config=null")
    with torch.no_grad():
        for p in module.codec.backbone.unet_parameters():
            p.add_(0.01)  # LoRA that differs from its initialisation must survive export
    package = export_package(module.codec.eval(), tmp_path / "package")
    stored = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(package / "weights.safetensors"))
    assert any("lora_" in k for k in stored)
    assert not any(k.startswith("backbone.unet.") and "lora_" not in k for k in stored), "frozen UNet not stored"
    assert not any(k.startswith("backbone.vae.") for k in stored)

    codec, fingerprint = load_package(package)
    image = torch.rand(3, 70, 90)
    data = compress_image(codec, fingerprint, image)
    first, second = decompress_bytes(codec, fingerprint, data), decompress_bytes(codec, fingerprint, data)
    assert first.shape == (1, 3, 70, 90) and torch.equal(first, second)
    reference = module.codec.decompress(*[codec.compress(image[None])[k] for k in ("strings", "shape")], (70, 90))
    assert torch.allclose(first, reference["x_hat"], atol=1e-5), "reloaded package decodes as the trained model"


def test_missing_backbone_weights_say_what_to_download(tmp_path):
    with pytest.raises(MissingWeightsError, match="`hf download someone/no-such-model --local-dir"):
        DiffusionBackbone(pretrained="someone/no-such-model")


def test_a_missing_local_backbone_directory_says_what_makes_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="python -m training.standin_backbone --photos <folders> --out "
                                                   + str(tmp_path / "standin-sd")) as error:
        DiffusionBackbone(pretrained=str(tmp_path / "standin-sd"))
    assert "hf download stabilityai/stable-diffusion-2-1-base --local-dir" in str(error.value)


class _OracleUNet(nn.Module):
    """Returns the true ε or v for a known (y_0, noise) pair."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, latent, t, encoder_hidden_states):
        return type("Out", (), {"sample": self.target})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_one_step_clean_latent_for_both_parameterisations(tmp_path, prediction_type):
    cfg = compose_config(["model=sodec_stage2", *TINY_SODEC], tmp_path / "cfg")
    backbone = hydra.utils.instantiate(cfg.model.codec.backbone, prediction_type=prediction_type)
    y0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([999, 500])
    y_t = backbone.add_noise(y0, noise, t)
    alpha_bar = backbone.alphas_cumprod[t].view(-1, 1, 1, 1)
    target = noise if prediction_type == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * y0
    backbone.unet = _OracleUNet(target)
    assert torch.allclose(backbone.predict_clean_latent(y_t, t, torch.zeros(2, 77, 32)), y0, atol=1e-3)


def test_decode_breakdown_covers_every_module_of_the_path(tmp_path):
    from osdic.metrics.latency import decode_breakdown

    codec = _module(tmp_path).codec.eval()
    codec.update(force=True)
    started = time.perf_counter()
    figures = decode_breakdown(codec, torch.rand(1, 3, 64, 64), repeat=1, warmup=0)
    elapsed = time.perf_counter() - started
    assert list(figures) == ["entropy decoding (CPU)", "D_a (fidelity decoder)", "guidance",
                             "H_s + T_s", "UNet (one step)", "D_m (SD VAE decoder)", "total"]
    assert figures["total"] <= elapsed, "seconds of one decode each, within the call's own time"


def test_noised_unet_input_still_decodes_identically(tmp_path):
    codec = _module(tmp_path, "model.codec.input_noise=true").codec.eval()
    codec, fingerprint = load_package(export_package(codec, tmp_path / "package"))
    data = compress_image(codec, fingerprint, torch.rand(3, 64, 64))
    assert torch.equal(decompress_bytes(codec, fingerprint, data), decompress_bytes(codec, fingerprint, data))


def test_one_step_clean_latent_is_float32_under_bf16_autocast(tmp_path):
    """bf16 training and fp32 evaluation agree on the ε → ŷ_0 conversion: under bf16 autocast,
    ŷ_t and ŷ_0 are float32 and ŷ_0 is exactly the float64 conversion of the UNet's own output."""
    codec = _module(tmp_path).codec.eval()
    unet_outputs = []
    codec.backbone.unet.register_forward_hook(lambda module, args, out: unet_outputs.append(out.sample))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        vae = codec.vae_codec(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = codec.generate(vae["y_hat"], vae["z_hat"], vae["x_hat"], x.shape[-2:])
    assert out["latent_t"].dtype == torch.float32 and out["latent_0"].dtype == torch.float32
    alpha_bar = codec.backbone.alphas_cumprod[codec.timestep].double()
    exact = (out["latent_t"].double() - (1 - alpha_bar).sqrt() * unet_outputs[-1].double()) / alpha_bar.sqrt()
    assert torch.allclose(out["latent_0"].double(), exact, rtol=1e-5, atol=1e-5)


def _optimised_and_aux(module) -> list[torch.nn.Parameter]:
    return list(module.trainable_parameters()) + list(module.aux_parameters())


VARIANTS = [
    *[("sodec_stage2", f"model/codec/guidance={g}") for g in ("none", "text_tiny", "text_caption_tiny", "hyperprior_tiny",
                                                                           "fgm_tiny")],
    *[("sodec_stage3", f"model/codec/guidance={g}") for g in ("none", "text_tiny", "text_caption_tiny", "hyperprior_tiny",
                                                                           "fgm_tiny")],
    *[("sodec_stage3", f"model/alignment={a}") for a in ("none", "mse", "merged")],
    *[("sodec_stage3", f"model/alignment={a}", "model.train_fidelity_decoder=true") for a in ("mse", "merged")],
    ("sodec_stage2", "model/alignment=mse", "model.train_fidelity_decoder=true"),
    ("sodec_stage3", "model.train_vae_module=false"),
    ("sodec_stage3", "model/codec/guidance=hyperprior_tiny", "model.train_vae_module=false"),
    ("sodec_stage2", "model.codec.backbone.lora_rank=null", "model.codec.backbone.full_finetune=true"),
    ("sodec_stage3", "model.rate_in_loss=false"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v))
def test_every_optimised_parameter_gets_a_gradient(tmp_path, variant):
    """Only parameters on the loss path are optimised, and nothing else requires grad: under DDP
    with find_unused_parameters=false one parameter without a gradient fails the step."""
    stage, *overrides = variant
    module = _module(tmp_path, *overrides, stage=stage)
    optimised = _optimised_and_aux(module)
    assert {id(p) for p in optimised} == {id(p) for p in module.parameters() if p.requires_grad}
    terms, _ = module.compute_losses(torch.rand(2, 3, 64, 64))
    (terms["loss"] + (module.codec.aux_loss() if module.aux_parameters() else 0)).backward()
    names = {id(p): n for n, p in module.named_parameters()}
    without = [names[id(p)] for p in optimised if p.grad is None]
    assert not without, f"optimised without a gradient: {without[:8]}"


def test_training_the_fidelity_decoder_needs_an_alignment_term(tmp_path):
    from osdic.checks import ConfigError

    with pytest.raises(ConfigError) as error:
        _module(tmp_path, "model.train_fidelity_decoder=true", stage="sodec_stage2")
    assert error.value.key == "model.train_fidelity_decoder"


@pytest.mark.parametrize("overrides", [[], ["model/alignment=mse", "model.train_fidelity_decoder=true"]])
def test_fidelity_image_keeps_its_quality_through_stage_two(tmp_path, overrides):
    """x̂_f is the guidance: stage 2 must not trade its fidelity away. By default D_a is stage 1's
    and x̂_f does not change at all; trained with the alignment term its distortion does not rise."""
    module = _module(tmp_path, *overrides, stage="sodec_stage2")
    optimizer = torch.optim.Adam(module.trainable_parameters(), lr=1e-2)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)

    def fidelity_mse() -> float:
        with torch.no_grad():
            return float(module.distortion.mse(module.codec(x.clone())["x_hat_f"], x))

    before = fidelity_mse()
    for _ in range(5):
        optimizer.zero_grad()
        module.compute_losses(x)[0]["loss"].backward()
        optimizer.step()
    after = fidelity_mse()
    if overrides:
        assert after <= before
    else:
        assert after == before


def test_full_finetuning_trains_and_stores_every_unet_weight_of_a_pretrained_backbone(tmp_path, pretrained_tiny_backbone):
    """The LoRA table's full fine-tuning arm: the whole UNet trains, and since its weights no
    longer are the pretrained ones, checkpoints and packages store them (the VAE stays frozen)."""
    module = _module(tmp_path, f"model.codec.backbone.pretrained={pretrained_tiny_backbone}",
                     "model.codec.backbone.unet_config=null", "model.codec.backbone.vae_config=null",
                     "model.codec.backbone.scheduler_config=null", "model.codec.backbone.lora_rank=null",
                     "model.codec.backbone.full_finetune=true")
    unet = module.codec.backbone.unet
    trainable = {id(p) for p in module.trainable_parameters()}
    assert all(id(p) in trainable for p in unet.parameters())
    assert not any(id(p) in trainable for p in module.codec.backbone.vae.parameters())
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    package = export_package(module.codec.eval(), tmp_path / "package")
    stored = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(package / "weights.safetensors"))
    assert {f"backbone.unet.{k}" for k in unet.state_dict()} <= set(stored)
    assert not any(k.startswith("backbone.vae.") for k in stored), "the frozen SD VAE is rebuilt from its source"
    loaded, _ = load_package(package)
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), loaded.backbone.unet.state_dict().values()))


def test_full_finetuning_takes_no_lora_rank(tmp_path):
    with pytest.raises(ConfigError, match="set lora_rank=null") as error:
        _module(tmp_path, "model.codec.backbone.full_finetune=true")
    assert error.value.key == "model.codec.backbone.full_finetune"


def test_the_caption_guidance_prompts_the_unet_with_a_caption_of_each_images_fidelity_reconstruction(tmp_path):
    """Guidance (ii) depends on the image: x̂_f's caption, encoded by SD's text encoder."""
    module = _module(tmp_path, "model/codec/guidance=text_caption_tiny", stage="sodec_stage2")
    guidance = module.codec.guidance
    images = torch.zeros(2, 3, 64, 64)
    images[0, :, :, :40] = torch.tensor([0.15, 0.3, 0.85]).view(3, 1, 1)  # 5/8 blue, 3/8 green
    images[0, :, :, 40:] = torch.tensor([0.2, 0.65, 0.2]).view(3, 1, 1)
    images[1, :, :, :48] = 0.95  # 3/4 white, 1/4 red
    images[1, :, :, 48:] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)
    captions = guidance.captions(images)
    assert captions == ["a dim photo of blue and green", "a bright photo of white and red"]
    tokens = guidance(images, torch.zeros(2, 8, 1, 1))
    assert tokens.shape == (2, 77, 32) and not torch.allclose(tokens[0], tokens[1])


@pytest.fixture
def tiny_blip(tmp_path):
    """A BLIP captioner of test size with random weights, saved as a model directory is."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "tree", "sky"]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    torch.manual_seed(0)
    config = BlipConfig(text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, bos_token_id=2, sep_token_id=3, pad_token_id=0,
                                         max_position_embeddings=32),
                        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8))
    directory = tmp_path / "blip"
    BlipForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_a_blip_captioner_from_a_local_directory_captions_the_same_image_the_same_way(tiny_blip):
    from osdic.models.guidance import ImageCaptioner

    captioner = ImageCaptioner(str(tiny_blip), max_new_tokens=5)
    images = torch.rand(2, 3, 48, 40)
    captions = captioner(images)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert captioner(images) == captions


def test_a_captioner_that_is_not_on_disk_says_where_it_comes_from():
    from osdic.models.guidance import ImageCaptioner

    with pytest.raises(MissingWeightsError, match="hf download someone/no-such-captioner"):
        ImageCaptioner("someone/no-such-captioner")
