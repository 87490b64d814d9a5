"""Lightning checkpoints written atomically (see :mod:`osdic.utils.files`).

Lightning's own writer saves to a temporary file in the system's temp directory and moves it
into place; on a cluster that directory is usually another filesystem than the run's, so the
move is a copy, and a full disk or a kill during the copy leaves a truncated ``last.ckpt``.
This writer streams the checkpoint into a temporary file beside its target (no second copy in
memory either) and renames it onto the target once it is complete and on disk. It hashes the bytes
as they go and writes their SHA-256 beside the checkpoint (``<name>.ckpt.sha256``), which
``ckpt_path: auto`` verifies: a checkpoint whose bytes changed on disk (a bad sector, a partial
copy between clusters) is skipped with a message instead of resuming from damaged weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from osdic.utils.files import atomic_write, write_atomically

CHECKSUM_SUFFIX = ".sha256"


class _HashingWriter:
    """The file-like object torch.save writes to: forwards every write and hashes it."""

    def __init__(self, file: BinaryIO):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def checksum_path(path: str | Path) -> Path:
    return Path(f"{path}{CHECKSUM_SUFFIX}")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:  # remote storage (fsspec): Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_write(path) as file:
                writer = _HashingWriter(file)
                torch.save(checkpoint, writer)
            write_atomically(checksum_path(path), f"{writer.digest.hexdigest()}  {Path(path).name}\n".encode())
        except RuntimeError as exc:
            failed_write = exc.__context__  # torch's zip writer reports a failed write (full disk) as its own error
            if not isinstance(failed_write, OSError):
                raise
            raise OSError(failed_write.errno, f"{failed_write.strerror}: checkpoint {path} not written "
                                              "(the previous one is intact)") from None

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        checksum_path(path).unlink(missing_ok=True)
