"""Decoded images -> the backbone's input: normalised float tensors ``(3, S, S)``.

Separate from :mod:`lineguard.models.preprocess` so that decoding stays free of torch (the preprocessing
and ingress replicas decode; only the processes that run a network import this).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lineguard.models.preprocess import PreprocessConfig, open_image, resize


def to_tensor(image: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """RGB image -> normalised float tensor ``(3, S, S)``."""
    array = np.asarray(resize(image, config.image_size), dtype=np.float32)
    tensor = torch.from_numpy(array).permute(2, 0, 1).div_(255.0)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def preprocess_bytes(data: bytes, config: PreprocessConfig) -> torch.Tensor:
    """Bytes -> ``(3, S, S)`` model input; raises BadImageError / ImageTooLargeError."""
    return to_tensor(open_image(data, config.max_pixels), config)


def load_file(path: Path, config: PreprocessConfig) -> torch.Tensor:
    return preprocess_bytes(Path(path).read_bytes(), config)
