"""Device and numeric-precision choices, made once and in one place."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from lineguard.errors import ConfigError
from lineguard.models.spec import PRECISIONS


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU. Refuses CUDA that is absent."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible: use 'auto' or 'cpu'")
    return resolved


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 is ~2-4x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``: fp16 on GPUs, bf16 where the CPU has it natively."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("fp16 is not supported on the CPU (it is emulated and ~100x slower): use bf16 or fp32")
        return torch.float16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
