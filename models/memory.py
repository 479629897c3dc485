"""glibc's allocator under torch: large buffers kept in the heap instead of handed back to the kernel.

With glibc's defaults every buffer of more than its mmap threshold (128 KiB, rising to at most 32 MiB)
is mapped fresh and unmapped when freed, and the heap's top is trimmed back to the system; a network's
activations are exactly such buffers, freshly faulted in page by page on every layer of every batch.
Measured with ``python -m benchmarks.allocator`` (2-core AMD EPYC, AVX-512 BF16; the backbone at batch
16): torch spent 45-56% of its CPU time in the kernel at 4,400-10,500 page faults per image, 9.0 (bf16)
and 17.7 (fp32) ms per image; with both thresholds raised, 0-1% in the kernel, 1-27 faults, 3.6 and
6.4 ms. A preloaded jemalloc (Debian's, default settings) was slower still (14.8 and 28.9 ms): it too
returns memory eagerly. ONNX Runtime keeps its own arena and is unaffected (5.4-5.6 ms either way).

:func:`keep_large_buffers` sets the two thresholds with ``mallopt`` in the running process, so every
process that runs a network takes it without a wrapper or an environment variable: the command line
(fits, evaluation, export), the Backbone and Scorer replicas, the Ray Data and Ray Train workers. The
price is that a process keeps its peak heap (a Backbone replica's largest batch) instead of giving it
back between batches. The light replicas do the opposite on purpose (``serve_config.yaml``: they return
uploaded frames' buffers at 1 MiB). ``LINEGUARD_KEEP_LARGE_BUFFERS=0`` in the environment leaves glibc's
defaults (for side-by-side measurements).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
LARGEST = 2**31 - 1  # mallopt takes an int: 2 GiB, above any single buffer of these networks


@functools.cache
def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); False where there is no glibc, or
    where ``LINEGUARD_KEEP_LARGE_BUFFERS=0``."""
    if os.environ.get("LINEGUARD_KEEP_LARGE_BUFFERS", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to set
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))
