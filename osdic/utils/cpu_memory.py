"""Training on the CPU: keep freed tensor memory in the process instead of handing it back to the OS.

PyTorch's CPU tensors come straight from ``malloc`` (there is no caching allocator as on CUDA).
glibc returns a large freed block to the OS (``munmap``, or trimming the heap's top), and the next
batch's activations fault those pages in again, zeroed by the kernel. How often that happens
depends on the process's allocation history (glibc adjusts its thresholds to the blocks it has
freed): the framework's training process took twice the page faults of the same step in a bare
loop, and a sixth of its CPU time went to the kernel (BENCHMARKS.md, learning speed). A fixed mmap
threshold and a high trim threshold make every process keep and reuse its batch-sized blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap; glibc accepts at most 32 MiB on 64-bit systems
MMAP_THRESHOLD = 32 << 20
#: the free memory at the heap's top that glibc keeps before giving it back
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep and reuse freed blocks in this process (and the processes it forks
    later); → whether it was set (False where the C library is not glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
