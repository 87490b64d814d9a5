"""The device a command runs on, and the one way anything is timed on it.

``auto`` means the first GPU when there is one, the CPU otherwise. A GPU runs kernels
asynchronously, so a time read without synchronising measures the launch, not the work:
:func:`timed` synchronises before starting the clock and before reading it, runs warm-up calls
first (allocator, cuDNN autotuning, lazy initialisation) and reports the median of the repeats,
which one slow outlier (another process, a page fault) does not move.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; any other name as torch reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], repeat: int = 3, warmup: int = 1,
          device: torch.device = torch.device("cpu")) -> tuple[T, float]:
    """``fn()``'s last result and the median of ``repeat`` timed calls in seconds, after
    ``warmup`` untimed ones, each synchronised on ``device``."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)
