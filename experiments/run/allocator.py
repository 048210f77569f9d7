"""Keep freed CPU memory in the process instead of handing it back to the kernel after every step.

PyTorch's CPU allocator takes its buffers from the C library's ``malloc``. glibc serves blocks above its mmap
threshold (128 KiB at start, raised dynamically up to 32 MiB) with fresh ``mmap`` pages and trims the heap
when its top grows past the trim threshold, so a training loop whose activations are a few hundred KiB to a few
MiB each (1024 × 128 float32 is 512 KiB; Dis-II's 2665 × 128 is 1.3 MiB) pays page faults on every new tensor,
every step. Raising both thresholds once makes those blocks come from, and return to, the heap: measured on
the 2-core development machine, a Dis-II WHC epoch went from 38.9 to 29.5 ms of CPU time (1 thread).

Applied by the command line (``python -m experiments``) only; the library itself never changes process-wide
settings. ``RF_MALLOC_TUNING=0`` turns it off. Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameter numbers of glibc's ``<malloc.h>``
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

#: blocks below this come from the heap (glibc's own cap on the dynamic threshold is 32 MiB; one MNIST batch
#: of activations, 128 × 600 float32, is 300 KiB, a Dis-II layer 1.3 MiB, the largest IWAE chunk a few MiB)
MMAP_THRESHOLD_BYTES: int = 256 * 2**20

#: the heap is trimmed only when this much is free at its top
TRIM_THRESHOLD_BYTES: int = 1024 * 2**20

#: extra bytes requested whenever the heap grows (fewer, larger ``brk`` calls)
TOP_PAD_BYTES: int = 64 * 2**20

ENV_SWITCH = "RF_MALLOC_TUNING"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); returns whether it was applied."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to do
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                               (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                                               (_M_TOP_PAD, TOP_PAD_BYTES)))
