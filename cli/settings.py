"""Process settings, read once from the environment (``LINEGUARD_*``) and validated at start-up.

``LINEGUARD_STORE``: the model store (a local folder or an object-store URI). ``LINEGUARD_DEVICE``,
``LINEGUARD_PRECISION``, ``LINEGUARD_WEIGHTS``: when set, the defaults of ``--device``, ``--precision`` and
``--weights`` (otherwise the options' own defaults hold: :mod:`lineguard.training.options`).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lineguard.models.spec import PRECISIONS
from lineguard.registry.store import DEFAULT_STORE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINEGUARD_", extra="forbid")

    store: str = DEFAULT_STORE
    device: str | None = None
    precision: str | None = None
    weights: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError(f"LINEGUARD_DEVICE={value!r}: use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        if value is not None and value not in PRECISIONS:
            raise ValueError(f"LINEGUARD_PRECISION={value!r}: use one of {PRECISIONS}")
        return value

    def runtime_defaults(self) -> dict[str, Any]:
        """The runtime flags' defaults this environment sets."""
        return {
            k: v for k, v in (("device", self.device), ("precision", self.precision), ("weights", self.weights)) if v
        }


@functools.cache
def get_settings() -> Settings:
    return Settings()
