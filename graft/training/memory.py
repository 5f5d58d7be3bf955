"""Keep freed memory in the process while training on the CPU.

Every training step allocates its activations afresh (tens of MB for the tiny CNN at batch 64, far
more for a ResNet) and frees them at the end of the step. With glibc's default settings, malloc often
hands that memory back to the kernel as soon as it is freed (it trims the top of the heap once more
than twice its dynamic mmap threshold is free there), so the next step faults every page back in:
measured on a 2-core CPU, 300,000 page faults a second, a third of the CPU time in the kernel and
steps up to 45 % slower (BENCHMARKS.md, "Where the slower steps came from"). Whether it happens
depends on the heap's history, so the same stage ran at 2,700 img/s in one process and 4,900 in
another. PyTorch's CUDA allocator caches for the same reason; on the CPU, torch uses plain malloc.

The fix is glibc's own knobs, set from inside the process (the MALLOC_*_ environment variables only
work when set before the interpreter starts): never trim below `TRIM_THRESHOLD`, and a fixed mmap
threshold so that step-sized blocks come from the heap. The cost is that a training process keeps
its peak heap until it exits, which is what a caching allocator does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 1 << 30   # free memory kept at the top of the heap before giving it back: 1 GiB
MMAP_THRESHOLD = 32 << 20  # blocks above this get their own mapping: glibc's largest allowed value


@functools.cache
def keep_freed_memory() -> bool:
    """Set the two thresholds once per process; False where the C library is not glibc (macOS, musl),
    which have their own allocators and nothing to set here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 for a value it refuses.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
