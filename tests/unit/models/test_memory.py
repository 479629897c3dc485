"""keep_large_buffers: after it, a process that allocates and frees large buffers over and over (a network's
layers, batch after batch) reuses its heap instead of faulting fresh pages in every time."""

from __future__ import annotations

import subprocess
import sys

CHURN = """
import resource, sys
import numpy as np
from lineguard.models.memory import keep_large_buffers
if sys.argv[1] == "keep":
    assert keep_large_buffers()
def churn():  # a network's layers: buffers of many sizes, written (every page touched) and freed
    for _ in range(5):
        for mb in (48, 1, 24, 3, 12, 40, 6, 64):
            buffer = np.ones(mb * 131072)
            del buffer
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout.strip())


def test_large_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = faults("default"), faults("keep")
    assert default > 2_000  # glibc's defaults: the large ones mapped and unmapped each time (8,060 here)
    assert kept < default / 50, (default, kept)  # 0 here
