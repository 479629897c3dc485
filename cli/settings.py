"""Process settings, read once from the environment (``LINEGUARD_*``) and validated at start-up."""

from __future__ import annotations

import functools

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lineguard.models.device import PRECISIONS


class Settings(BaseSettings):
    """``LINEGUARD_STORE``: model store root (local folder or object-store URI).
    ``LINEGUARD_DEVICE``: "auto", "cpu", "cuda", "cuda:N". ``LINEGUARD_PRECISION``: "auto", "fp32", "bf16", "fp16".
    ``LINEGUARD_WEIGHTS``: backbone weights source ("auto", "offline", "hub", "none" or a file).
    """

    model_config = SettingsConfigDict(env_prefix="LINEGUARD_", extra="forbid")

    store: str = "./lineguard-store"
    device: str = "auto"
    precision: str = "auto"
    weights: str = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError(f"LINEGUARD_DEVICE={value!r}: use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"LINEGUARD_PRECISION={value!r}: use one of {PRECISIONS}")
        return value


@functools.cache
def get_settings() -> Settings:
    return Settings()
