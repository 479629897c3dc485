"""Anomaly heads, fitted on normal features only. ``build_head(kind, **params)`` makes one by name."""

from __future__ import annotations

from typing import Any

from lineguard.errors import ConfigError
from lineguard.models.heads.base import AnomalyHead, HeadOutput
from lineguard.models.heads.mean_embedding import MeanEmbedding
from lineguard.models.heads.padim import Padim
from lineguard.models.heads.patchcore import PatchCore

HEADS: dict[str, type[AnomalyHead]] = {cls.kind: cls for cls in (PatchCore, Padim, MeanEmbedding)}


def build_head(kind: str, **params: Any) -> AnomalyHead:
    """A new, unfitted head; unknown kinds or parameters get an error that lists the valid ones."""
    if kind not in HEADS:
        raise ConfigError(f"unknown head {kind!r}: choose one of {sorted(HEADS)}")
    cls = HEADS[kind]
    try:
        return cls(**params)
    except TypeError as err:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"bad parameters for head {kind!r}: {err}; valid parameters are {valid}") from err


__all__ = [
    "HEADS",
    "AnomalyHead",
    "HeadOutput",
    "MeanEmbedding",
    "Padim",
    "PatchCore",
    "build_head",
]
