"""CPU training keeps the memory a batch freed for the next batch (osdic.utils.cpu_memory) instead
of handing it back to the OS and faulting it in again."""

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest

#: in a fresh process: free a 16 MiB tensor (one activation of a training batch) → MiB still free in
#: malloc's heap, ready for the next batch; glibc's own policy maps such a block on its own and unmaps
#: it when freed (0 MiB kept)
FREE_ONE_ACTIVATION = """
import ctypes, ctypes.util, torch
from osdic.utils.cpu_memory import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
assert keep_freed_memory()
activation = torch.empty(16 << 18)
del activation
print(libc.mallinfo2().fordblks >> 20)
"""


def has_mallinfo2() -> bool:
    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2")


@pytest.mark.skipif(not has_mallinfo2(), reason="a policy of glibc's malloc (mallinfo2: glibc ≥ 2.33)")
def test_memory_a_batch_freed_stays_in_the_process():
    result = subprocess.run([sys.executable, "-c", FREE_ONE_ACTIVATION], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 16, f"{result.stdout.strip()} MiB kept of the 16 MiB freed"
