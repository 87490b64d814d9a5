"""CUDA checks (run on a GPU machine: `pytest -m gpu`); skipped where no GPU exists."""

from __future__ import annotations

import copy

import pytest
import torch

from osdic.codec.package import export_package, load_package
from osdic.models.hific import HiFiCCompressor
from tests.conftest import TINY_SODEC, TINY_STAGE4, compose_config
from train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = dict(latent_channels=8, encoder_channels=[4, 8, 8, 16, 16], hyper_channels=8, residual_blocks=1)


def test_a_file_encoded_on_the_gpu_in_bf16_decodes_bit_exactly_on_the_cpu(tmp_path):
    torch.manual_seed(0)
    cpu_codec, _ = load_package(export_package(HiFiCCompressor(**TINY).eval(), tmp_path / "pkg"))
    gpu_codec = copy.deepcopy(cpu_codec).cuda()
    x = torch.rand(1, 3, 200, 300)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        coded = gpu_codec.encode_latents(x.cuda())
    y_hat, z_hat = cpu_codec.decode_latents([[s[0]] for s in coded["strings"]], coded["shape"])
    assert torch.equal(y_hat, coded["y_hat"]) and torch.equal(z_hat, coded["z_hat"])


@pytest.mark.parametrize("overrides", [["model=sodec_stage3", *TINY_SODEC], TINY_STAGE4], ids=["stage3", "stage4"])
def test_bf16_training_on_the_gpu(tmp_path, overrides):
    metrics, trainer = train(compose_config([*overrides, "trainer=gpu"], tmp_path / "run"))
    assert trainer.global_step == 4 and torch.isfinite(torch.tensor(metrics["train/loss"]))
