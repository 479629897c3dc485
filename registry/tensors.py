"""torch state dicts <-> a version's safetensors file, for the processes that run torch (fitting, the image
scorers). The store itself moves bytes, so light processes never import torch through it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from safetensors.torch import load, save

from lineguard.errors import CorruptModelError
from lineguard.registry.card import ModelCard
from lineguard.registry.store import ModelStore


def to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``tensors`` (detached, on the CPU, contiguous)."""
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def read_tensors(store: ModelStore, card: ModelCard) -> dict[str, torch.Tensor]:
    """The version's tensors (checksum-verified)."""
    data = store.read_tensor_bytes(card)
    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CorruptModelError(f"model file of {card.line!r} {card.version} is not valid safetensors: {err}") from err
