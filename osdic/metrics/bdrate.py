"""Bjøntegaard delta rate with pchip interpolation (the ``bjontegaard`` package)."""

from __future__ import annotations

from typing import Sequence

import bjontegaard


def bd_rate(anchor_bpp: Sequence[float], anchor_quality: Sequence[float], test_bpp: Sequence[float],
            test_quality: Sequence[float], higher_is_better: bool = True) -> float:
    """Average bitrate difference (%) of the test curve against the anchor at equal quality;
    negative = fewer bits. Lower-is-better metrics (LPIPS, DISTS, FID) are negated first."""
    sign = 1.0 if higher_is_better else -1.0
    return float(bjontegaard.bd_rate(
        list(anchor_bpp), [sign * q for q in anchor_quality], list(test_bpp), [sign * q for q in test_quality],
        method="pchip", require_matching_points=False, min_overlap=0,
    ))
