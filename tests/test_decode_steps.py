"""One decode path: the per-module latency breakdown times the steps a user's ``decompress`` runs."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from osdic.metrics.latency import StepTimer, decode_breakdown
from tests.conftest import TINY_OSDIFF, TINY_SODEC, TINY_STAGE1, compose_config
from osdic.utils.config import instantiate_node

CODECS = {
    "hific": TINY_STAGE1,
    "sodec with input noise": ["model=sodec_stage3", *TINY_SODEC, "model.codec.input_noise=true"],
    "osdiff": TINY_OSDIFF,
}


@pytest.mark.parametrize("name", CODECS)
def test_latency_breakdown_times_the_steps_decompress_runs(tmp_path, name):
    torch.manual_seed(0)
    codec = instantiate_node(compose_config(CODECS[name], tmp_path / "run").model, "model").codec.eval()
    codec.update(force=True)
    x = torch.rand(1, 3, 64, 96)
    coded = codec.compress(x)
    run = []

    @contextmanager
    def record(step):
        run.append(step)
        yield

    with torch.inference_mode():
        plain = codec.decompress(coded["strings"], coded["shape"], x.shape[-2:])
        codec.decompress(coded["strings"], coded["shape"], x.shape[-2:], step=record)
        timed = codec.decompress(coded["strings"], coded["shape"], x.shape[-2:], step=StepTimer(torch.device("cpu")))
    assert all(torch.equal(timed[key], plain[key]) for key in plain)  # timing changes nothing decoded
    figures = decode_breakdown(codec, x, repeat=1, warmup=0)
    assert [step for step in figures if not step.startswith("total")] == run
    assert figures["total"] == pytest.approx(sum(figures[step] for step in run))
    if name.startswith("sodec"):  # the step the breakdown's own copy of the path once skipped
        assert "input noise" in run
