"""Files that are either the old version or the new one, never part of one.

A checkpoint, a codec package or an evaluation output is written to a temporary file beside its
target, flushed to disk, then renamed onto it. A full disk, a crash or a kill mid-write leaves
the previous file intact (and no temporary file behind when Python sees the error). The
temporary file lives in the target's own directory because a rename is atomic only within one
filesystem; across filesystems it becomes a copy that can stop half-way.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces ``path`` only when the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # hidden and unique: never taken for a finished file (*.ckpt) nor clashing with another writer
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as file:
        file.write(data)
