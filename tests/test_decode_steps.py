"""One decode path: the per-module latency breakdown times the steps a user's ``decompress`` runs;
and the one way anything is timed."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from osdic.metrics.latency import StepTimer, decode_breakdown
from osdic.utils import devices
from tests.conftest import TINY_OSDIFF, TINY_SODEC, TINY_STAGE1, compose_config
from training.config import instantiate_node

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


def test_timed_reports_the_median_of_the_repeats_after_untimed_warm_up_calls(monkeypatch):
    clock = iter([0.0, 10.0, 10.0, 11.0, 11.0, 13.0])  # three timed calls: 10 s, 1 s, 2 s
    monkeypatch.setattr(devices.time, "perf_counter", lambda: next(clock))
    calls = []
    result, seconds = devices.timed(lambda: calls.append(len(calls)) or len(calls), repeat=3, warmup=2)
    assert len(calls) == 5 and result == 5, "two warm-up calls, then three timed ones; the last result"
    assert seconds == 2.0, "the median (not the minimum 1 s nor the mean)"


def test_timing_on_a_gpu_synchronises_around_every_timed_call(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: events.append("sync"))
    devices.timed(lambda: events.append("call"), repeat=2, warmup=1, device=torch.device("cuda"))
    assert events == ["call", "sync", "call", "sync", "sync", "call", "sync"]


@pytest.mark.parametrize("visible, expected", [(False, "cpu"), (True, "cuda")])
def test_auto_is_the_gpu_when_one_is_visible(monkeypatch, visible, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
    assert devices.resolve_device("auto") == torch.device(expected)
    assert devices.resolve_device("cpu") == torch.device("cpu"), "a named device is taken as named"
