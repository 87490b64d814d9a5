"""The VAE compression module on real photos: real bitstreams, exact latents, honest bpp."""

from __future__ import annotations

import pytest
import torch

from osdic.codec.bitstream import BitstreamError, unpack
from osdic.codec.image_codec import compress_image, decompress_bytes
from osdic.codec.package import export_package, load_package
from osdic.images import open_rgb, to_tensor
from osdic.models.entropy import rate_bpp
from osdic.models.hific import HiFiCCompressor

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


def _fit_briefly(codec: HiFiCCompressor, images: list[torch.Tensor], steps: int = 300) -> HiFiCCompressor:
    """A few rate–distortion steps and enough aux steps for calibrated quantiles: the rate
    estimate only means something for a model whose entropy models have been fitted."""
    opt = torch.optim.Adam(codec.main_parameters(), lr=1e-3)
    aux = torch.optim.Adam(codec.aux_parameters(), lr=5e-2)
    crops = torch.stack([img[:, :128, :128] for img in images])
    for _ in range(steps):
        out = codec(crops)
        loss = torch.mean((out["x_hat"] - crops) ** 2) + 0.001 * rate_bpp(out["likelihoods"], 128 * 128)
        opt.zero_grad(), aux.zero_grad()
        (loss + codec.aux_loss()).backward()
        opt.step(), aux.step()
    for _ in range(300):
        aux.zero_grad()
        codec.aux_loss().backward()
        aux.step()
    return codec.eval()


@pytest.fixture(scope="module")
def kodak_images(kodak_dir):
    return [to_tensor(open_rgb(kodak_dir / f"kodim{i:02d}.png").image) for i in (1, 4, 7, 23)]


@pytest.fixture(scope="module")
def package(kodak_images, tmp_path_factory):
    torch.manual_seed(0)
    codec = _fit_briefly(HiFiCCompressor(**TINY), kodak_images)
    return load_package(export_package(codec, tmp_path_factory.mktemp("package")))


def test_latents_survive_entropy_coding_bit_exactly(package, kodak_images):
    codec, _ = package
    for image in kodak_images[:2]:
        coded = codec.encode_latents(image[None])
        y_hat, z_hat = codec.decode_latents([[s[0]] for s in coded["strings"]], coded["shape"])
        assert torch.equal(y_hat, coded["y_hat"]) and torch.equal(z_hat, coded["z_hat"])


def test_real_bpp_matches_the_estimate_on_kodak(package, kodak_images):
    codec, fingerprint = package
    for image in kodak_images:
        h, w = image.shape[-2:]
        data = compress_image(codec, fingerprint, image)
        payload_bits = sum(len(s) for s in unpack(data).strings) * 8
        with torch.inference_mode():
            estimated_bits = rate_bpp(codec(image[None])["likelihoods"], h * w) * h * w
        # Never more than 5 % over the estimate. Under it by up to 20 %: the same 300-step fit gave a
        # model within 1 % of its estimate on one CPU and 8–14 % under it on another (one thread,
        # different float rounding), its estimate overstating the bits that rANS spends on y
        assert float(estimated_bits) * 0.8 <= payload_bits <= float(estimated_bits) * 1.05
        assert len(data) * 8 - payload_bits < 64 * 8, "header + checksum stay small"


def test_decoding_is_deterministic_and_crops_to_the_original_size(package, kodak_images):
    codec, fingerprint = package
    image = kodak_images[0][:, :500, :700]  # not a multiple of 64: padded, then cropped back
    data = compress_image(codec, fingerprint, image)
    first, second = decompress_bytes(codec, fingerprint, data), decompress_bytes(codec, fingerprint, data)
    assert first.shape == (1, 3, 500, 700)
    assert torch.equal(first, second)
    coded = codec.compress(image[None])
    assert torch.equal(codec.decompress(coded["strings"], coded["shape"], (500, 700))["x_hat"], first)


def test_a_file_encoded_under_bf16_autocast_decodes_exactly_in_float32(package, kodak_images):
    """The entropy parameters run in float32 on the CPU whatever the caller's precision, so the
    decoder (float32, another device) rebuilds exactly the ŷ a bf16 (GPU-style) encoder coded."""
    codec, _ = package
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coded = codec.encode_latents(kodak_images[1][None])
    y_hat, z_hat = codec.decode_latents([[s[0]] for s in coded["strings"]], coded["shape"])
    assert torch.equal(y_hat, coded["y_hat"]) and torch.equal(z_hat, coded["z_hat"])


def test_a_file_from_another_model_is_refused(package, kodak_images, tmp_path):
    codec, fingerprint = package
    data = compress_image(codec, fingerprint, kodak_images[0])
    other_codec, other_fingerprint = load_package(export_package(HiFiCCompressor(**TINY).eval(), tmp_path / "other"))
    assert other_fingerprint != fingerprint
    with pytest.raises(BitstreamError, match="another codec"):
        decompress_bytes(other_codec, other_fingerprint, data)


@pytest.mark.parametrize("channel_norm, encoder_norms, decoder_norms",
                         [("all", 5, 10), ("inner", 4, 9), ("none", 0, 0)])
def test_channel_norm_places_hifics_channelnorm_where_it_says(channel_norm, encoder_norms, decoder_norms):
    from osdic.models.hific import ChannelNorm

    codec = HiFiCCompressor(16, [8, 8, 8, 8, 16], 8, residual_blocks=2, channel_norm=channel_norm)
    count = lambda module: sum(isinstance(m, ChannelNorm) for m in module.modules())  # noqa: E731
    # E: after the 7×7 conv and each of four stride-2 convs; D_a: on ŷ, after the head conv, two per
    # residual block, after each of four transposed convs
    assert (count(codec.encoder), count(codec.fidelity_decoder)) == (encoder_norms, decoder_norms)
    assert codec.constructor_arguments["channel_norm"] == channel_norm, "a codec package rebuilds the same layers"


def test_gdn_replaces_the_norm_and_relu_of_every_resampling_layer_and_nothing_else(tmp_path):
    from compressai.layers import GDN

    from osdic.models.hific import ChannelNorm

    codec = HiFiCCompressor(16, [8, 8, 8, 8, 16], 8, residual_blocks=2, channel_norm="all", resampling_nonlinearity="gdn")
    gdns = lambda module: [m.inverse for m in module.modules() if isinstance(m, GDN)]  # noqa: E731
    norms = lambda module: sum(isinstance(m, ChannelNorm) for m in module.modules())  # noqa: E731
    # E: GDN after each of four stride-2 convs, HiFiC's norm and ReLU after the 7×7 conv; D_a: inverse
    # GDN after each of four transposed convs, ChannelNorm on ŷ, after the head conv and in the residual blocks
    assert gdns(codec.encoder) == [False] * 4 and gdns(codec.fidelity_decoder) == [True] * 4
    assert (norms(codec.encoder), norms(codec.fidelity_decoder)) == (1, 6)
    assert sum(isinstance(m, torch.nn.ReLU) for m in codec.encoder.modules()) == 1
    codec.eval()
    loaded, _ = load_package(export_package(codec, tmp_path / "gdn"))
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["x_hat"], codec(x)["x_hat"], msg="a codec package rebuilds the same layers")


@pytest.mark.parametrize("full_resolution_layers, widths, full_resolution_outputs",
                         [(True, [8, 8, 8, 8, 16], (1, 2)), (False, [8, 8, 8, 16], (0, 1))])
def test_without_the_full_resolution_layers_only_the_rgb_output_is_at_full_resolution(
        full_resolution_layers, widths, full_resolution_outputs, tmp_path):
    """HiFiC's E starts and D_a ends with a 7×7 conv on full-resolution feature maps; without them
    (``hific_small``) the first conv already strides and D_a's last transposed conv outputs RGB,
    with ŷ at 1/16 of the image either way."""
    codec = HiFiCCompressor(16, widths, 8, residual_blocks=1, resampling_nonlinearity="gdn",
                            full_resolution_layers=full_resolution_layers).eval()
    full_size = {"encoder": 0, "fidelity_decoder": 0}
    for part in full_size:
        for layer in getattr(codec, part).modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                def count(module, inputs, output, part=part):
                    full_size[part] += output.shape[-2:] == (64, 128)
                layer.register_forward_hook(count)
    x = torch.rand(1, 3, 64, 128)  # a multiple of 64: no padding
    with torch.no_grad():
        out = codec(x)
    assert (full_size["encoder"], full_size["fidelity_decoder"]) == full_resolution_outputs
    assert out["y_hat"].shape[-2:] == (4, 8) and out["x_hat"].shape == x.shape
    loaded, _ = load_package(export_package(codec, tmp_path / "codec"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["x_hat"], out["x_hat"], msg="a codec package rebuilds the same layers")


def test_the_number_of_widths_follows_the_full_resolution_layers():
    from osdic.checks import ConfigError

    with pytest.raises(ConfigError, match="encoder_channels.*4 widths"):
        HiFiCCompressor(16, [8, 8, 8, 8, 16], 8, residual_blocks=1, full_resolution_layers=False)
    with pytest.raises(ConfigError, match="encoder_channels.*5 widths"):
        HiFiCCompressor(16, [8, 8, 8, 16], 8, residual_blocks=1)


def test_channel_norm_normalises_each_position_across_channels_with_its_affine():
    """HiFiC's definition, whatever kernel computes it: per pixel, (x − mean_c) / √(var_c + ε)
    scaled and shifted per channel; gradients included."""
    from osdic.models.hific import ChannelNorm

    torch.manual_seed(0)
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    norm = norm.double()
    mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    out = norm(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad((out * weights).sum(), x)[0],
                               torch.autograd.grad((expected * weights).sum(), x)[0])


@pytest.mark.parametrize("key", ["channel_norm", "resampling_nonlinearity"])
def test_an_unknown_layer_choice_names_its_key(key):
    from osdic.checks import ConfigError

    with pytest.raises(ConfigError, match=key):
        HiFiCCompressor(16, [8, 8, 8, 8, 16], 8, residual_blocks=1, **{key: "some"})
