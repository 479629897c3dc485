"""What identifies a backbone's features (torch-free, so light processes can import it)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
DEFAULT_LAYERS: tuple[str, ...] = ("blocks.2", "blocks.4")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that decides the features a line was fitted on; lines with equal specs share a backbone."""

    name: str = DEFAULT_BACKBONE
    layers: tuple[str, ...] = DEFAULT_LAYERS
    image_size: int = 256

    def key(self) -> str:
        return f"{self.name}|{','.join(self.layers)}|{self.image_size}"
