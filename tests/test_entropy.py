"""The entropy models on their own: real coding is lossless on ŷ, and a file encoded in another
precision decodes bit-exactly, without the coding leaving anything in the model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from osdic.checks import ConfigError
from osdic.models.entropy import ElicEntropyModel, HyperpriorEntropyModel, rate_bpp

MODELS = {
    "hyperprior": lambda: HyperpriorEntropyModel(8, hyper_channels=8),
    "elic": lambda: ElicEntropyModel(8, hyper_channels=8, groups=[2, 2, 4], context_channels=[16, 16]),
}


def _latent(batch: int = 1) -> torch.Tensor:
    """A y with spatial structure and a range the tables cover: smoothed noise, 8 × 8×12."""
    return F.avg_pool2d(torch.randn(batch, 8, 10, 14) * 12, 3, stride=1)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    model.update(force=True)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_decoding_gives_the_encoders_quantised_latent(name):
    model = _model(name)
    coded = model.compress(_latent(batch=2))
    assert len(coded["strings"]) == model.num_strings and all(len(s) == 2 for s in coded["strings"])
    y_hat, _ = model.decompress(coded["strings"], coded["shape"])
    assert torch.equal(y_hat, coded["y_hat"])


@pytest.mark.parametrize("precision", ["bf16 autocast", "float64 weights"])
def test_elic_file_encoded_in_another_precision_decodes_bit_exactly(precision):
    """Every network deriving (σ, μ) runs in float32 on the CPU while coding, so an encoder in
    bf16 (a GPU's) or another dtype codes exactly the ŷ a float32 decoder rebuilds."""
    decoder = _model("elic")
    y = _latent()
    if precision == "bf16 autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            coded = decoder.compress(y)
    else:
        coded = copy.deepcopy(decoder).double().compress(y.double())
    y_hat, _ = decoder.decompress(coded["strings"], coded["shape"])
    assert torch.equal(y_hat, coded["y_hat"])


@pytest.mark.parametrize("name", MODELS)
def test_coding_in_another_precision_leaves_the_model_unchanged(name):
    """The float32 CPU copies used for coding live outside the module tree: a model coded from
    float64 (or a GPU) keeps its state-dict keys (checkpoints load back) and its parameters."""
    model = _model(name).double()
    keys, parameters = list(model.state_dict()), list(model.parameters())
    model.compress(_latent().double())
    assert list(model.state_dict()) == keys and list(model.parameters()) == parameters
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_training_gives_the_rate_of_the_rounded_latents_the_files_code(name):
    """``likelihoods_rounded`` in training = the likelihoods evaluation gives the same weights and
    y (the rate a controller steers), while the training likelihoods (noise) differ from them."""
    model, y = _model(name), _latent(2)
    pixels = 16 * y.shape[-2] * y.shape[-1]
    with torch.no_grad():
        evaluated = model(y)["likelihoods"]
        out = model.train()(y)
    assert out["likelihoods_rounded"].keys() == evaluated.keys()
    for key, likelihoods in evaluated.items():  # latent by latent, element by element
        torch.testing.assert_close(out["likelihoods_rounded"][key], likelihoods, rtol=1e-5, atol=1e-7)
    assert float(rate_bpp(out["likelihoods"], pixels)) != pytest.approx(float(rate_bpp(evaluated, pixels)), rel=1e-3)
    assert model.training  # the rounded pass leaves the model in training mode


def test_decoder_input_is_rounded_or_noisy_in_training_and_always_rounded_in_evaluation():
    y = _latent(2)
    torch.manual_seed(0)
    rounded, noisy = HyperpriorEntropyModel(8, 8).train(), HyperpriorEntropyModel(8, 8, decoder_input="noisy").train()
    noisy.load_state_dict(rounded.state_dict())
    from_rounded, from_noisy = rounded(y)["y_hat"], noisy(y)["y_hat"]
    means = rounded.entropy_parameters(rounded(y)["z_hat"])[1]
    offsets = lambda y_hat: ((y_hat - means) - (y_hat - means).round()).abs().max()  # noqa: E731
    assert offsets(from_rounded) < 1e-5
    assert 0 < (from_noisy - y).abs().max() <= 0.5 and offsets(from_noisy) > 0.1
    assert torch.equal(noisy.eval()(y)["y_hat"], rounded.eval()(y)["y_hat"])
    with pytest.raises(ConfigError) as error:
        HyperpriorEntropyModel(8, 8, decoder_input="soft")
    assert error.value.key == "decoder_input"
