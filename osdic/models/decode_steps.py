"""Decoding as named steps. Each codec's ``decompress(..., step=hook)`` runs every step of its
decode path inside ``hook(name)``, a context manager: the per-module latency breakdown
(metrics/latency.py) passes a timer, so it times exactly what a user decodes, step for step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

StepHook = Callable[[str], AbstractContextManager]

#: strings → latents on the CPU (and onto the networks' device); the OSDiff paper's latency leaves it out
ENTROPY_DECODING = "entropy decoding (CPU)"
#: the decode time OSDiff's paper reports: the total without entropy decoding
PAPER_PARTS = "total without entropy decoding (the OSDiff paper's parts)"


def no_hook(name: str) -> AbstractContextManager:
    return nullcontext()
