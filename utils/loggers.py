"""Logger construction and teardown."""

from __future__ import annotations

import netrc
import os
from typing import Sequence

from pytorch_lightning.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def build_wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    offline: bool | str = "auto",
    **kwargs,
) -> WandbLogger:
    """WandbLogger that goes offline by itself when no credentials are configured
    (``offline: auto``); ``WANDB_MODE`` in the environment still wins, as in wandb itself."""
    if offline == "auto":
        offline = not wandb_has_credentials() and "WANDB_MODE" not in os.environ
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(tags),
        offline=bool(offline),
        **kwargs,
    )


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run if one is open (between multirun jobs, and after an exception)."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
