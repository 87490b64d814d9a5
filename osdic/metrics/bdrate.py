"""Bjøntegaard delta rate with pchip interpolation (the ``bjontegaard`` package)."""

from __future__ import annotations

import math
from typing import Sequence

import bjontegaard


class BDRateNotAvailable(ValueError):
    """The BD-rate of these two curves is not defined; the message says why."""


def bd_rate(anchor_bpp: Sequence[float], anchor_quality: Sequence[float], test_bpp: Sequence[float],
            test_quality: Sequence[float], higher_is_better: bool = True) -> float:
    """Average bitrate difference (%) of the test curve against the anchor at equal quality;
    negative = fewer bits. Lower-is-better metrics (LPIPS, DISTS, FID) are negated first.
    Raises :class:`BDRateNotAvailable` with the reason when it is not defined (fewer than 2
    points, an undefined value, quality ranges that do not overlap, a non-monotonic curve)."""
    curves = {"anchor": (anchor_bpp, anchor_quality), "test": (test_bpp, test_quality)}
    sign = 1.0 if higher_is_better else -1.0
    for name, (rates, qualities) in curves.items():
        if len(rates) < 2:
            raise BDRateNotAvailable(f"the {name} curve has {len(rates)} rate point(s); 2 or more are needed")
        if any(math.isnan(v) for v in [*rates, *qualities]):
            raise BDRateNotAvailable(f"the {name} curve has an undefined (NaN) value")
    low = max(min(anchor_quality), min(test_quality))
    high = min(max(anchor_quality), max(test_quality))
    if high <= low:  # bjontegaard would warn and return NaN
        raise BDRateNotAvailable(
            f"the quality ranges do not overlap (anchor {min(anchor_quality):.4g}–{max(anchor_quality):.4g}, "
            f"test {min(test_quality):.4g}–{max(test_quality):.4g})")
    for name, (rates, qualities) in curves.items():  # bjontegaard would fail an assert (or pass one under -O)
        by_rate = [sign * quality for _, quality in sorted(zip(rates, qualities))]
        if any(at_higher <= at_lower for at_lower, at_higher in zip(by_rate, by_rate[1:])):
            raise BDRateNotAvailable(f"the {name} curve's quality does not improve with every step in rate")
    try:
        return float(bjontegaard.bd_rate(
            list(anchor_bpp), [sign * q for q in anchor_quality], list(test_bpp), [sign * q for q in test_quality],
            method="pchip", require_matching_points=False, min_overlap=0,
        ))
    except ValueError as exc:  # any other curve it refuses
        raise BDRateNotAvailable(f"{exc}") from None
