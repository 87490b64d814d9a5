"""Honest latency: batch size 1, warm-up first, device synchronisation around every timed call,
medians over repeats, entropy coding included, and the decode path broken down per module."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

from osdic.utils.devices import synchronize

#: OSDiff's reported 0.060 s timed its decode path without entropy decoding (and without synchronisation)


class StepTimer:
    """A ``decompress`` step hook (models/decode_steps.py) that records each step's seconds,
    synchronising the device around it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name].append(time.perf_counter() - start)


@torch.inference_mode()
def encode_seconds(codec, x: Tensor, repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``codec.compress`` (analysis transforms and entropy coding) for image
    ``x`` after ``warmup`` runs, synchronised."""
    param = next(p for p in codec.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    for _ in range(warmup):
        codec.compress(x)
    timer = StepTimer(param.device)
    for _ in range(repeat):
        with timer("encode"):
            codec.compress(x)
    return statistics.median(timer.seconds["encode"])


@torch.inference_mode()
def decode_breakdown(codec, x: Tensor, repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Seconds per step of ``codec.decompress`` for image ``x`` (1×3×H×W in [0, 1]): medians over
    ``repeat`` whole decodes after ``warmup`` ones, in the order decompress runs them, then their
    total (and, for OSDiff, the total of the parts its paper timed)."""
    param = next(p for p in codec.parameters())
    coded = codec.compress(x.to(device=param.device, dtype=param.dtype))
    image_size = x.shape[-2:]
    for _ in range(warmup):
        codec.decompress(coded["strings"], coded["shape"], image_size)
    timer = StepTimer(param.device)
    for _ in range(repeat):
        codec.decompress(coded["strings"], coded["shape"], image_size, step=timer)
    figures = {name: statistics.median(seconds) for name, seconds in timer.seconds.items()}
    figures["total"] = sum(figures.values())
    figures.update(codec.paper_timed_parts(figures))
    return figures
