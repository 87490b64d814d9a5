"""Lightning checkpoints written atomically (see :mod:`osdic.utils.files`).

Lightning's own writer saves to a temporary file in the system's temp directory and moves it
into place; on a cluster that directory is usually another filesystem than the run's, so the
move is a copy, and a full disk or a kill during the copy leaves a truncated ``last.ckpt``.
This writer streams the checkpoint into a temporary file beside its target (no second copy in
memory either) and renames it onto the target once it is complete and on disk.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from osdic.utils.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:  # remote storage (fsspec): Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_write(path) as file:
                torch.save(checkpoint, file)
        except RuntimeError as exc:
            failed_write = exc.__context__  # torch's zip writer reports a failed write (full disk) as its own error
            if not isinstance(failed_write, OSError):
                raise
            raise OSError(failed_write.errno, f"{failed_write.strerror}: checkpoint {path} not written "
                                              "(the previous one is intact)") from None
