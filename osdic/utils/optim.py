"""Optimizers that are not in torch."""

from __future__ import annotations


def adamw_8bit(params, **kwargs):
    """bitsandbytes' 8-bit AdamW (OSDiff's optimizer), when bitsandbytes is installed (CUDA)."""
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ImportError("adamw_8bit needs bitsandbytes (pip install bitsandbytes, CUDA only)") from exc
    return bitsandbytes.optim.AdamW8bit(params, **kwargs)
