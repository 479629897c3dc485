"""A supervised image classifier on the shared backbone's features, with calibrated confidence.

The served backbone is cut after its deepest tapped layer (``blocks.4`` of EfficientNet-Lite0) and is
shared by every image line, so a classifier line starts from those feature maps ``[(B, C_i, H_i, W_i)]``:

- every tapped map is pooled (global average, and global max, which keeps a small defect that an
  average over the whole part would wash out);
- optionally, the backbone's remaining pretrained stages (the *tail*: ``blocks.5`` and ``blocks.6``)
  run on the deepest map as the line's own copy, frozen or with the last stage fine-tuned, and their
  output is pooled too (deeper, more semantic features at the cost of 2.3 M parameters per line);
- the pooled vector is standardised (mean and std of the training data, kept as buffers) and a
  linear layer or a small MLP gives one logit per class.

Confidence is temperature-scaled (:mod:`lineguard.models.calibration`); the decision rule on the
calibrated probabilities, with a normal class and severity levels, is :mod:`lineguard.models.decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

import numpy as np
import torch
from torch import nn

from lineguard.errors import ConfigError, CorruptModelError, DataError, FeatureMismatchError, NotFittedError
from lineguard.models.decisions import ClassDecision, SeverityRules, decide
from lineguard.models.spec import DEFAULT_BACKBONE, Pooling, Tail

TAILS: tuple[str, ...] = get_args(Tail)
POOLINGS: tuple[str, ...] = get_args(Pooling)


def _pool(feature_map: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C)`` (avg) or ``(B, 2C)`` (avg, then max)."""
    avg = feature_map.mean(dim=(2, 3))
    if pooling == "avg":
        return avg
    return torch.cat([avg, feature_map.amax(dim=(2, 3))], dim=1)


class BackboneTail(nn.Module):
    """The stages of a timm backbone after the served tap ``after`` (the deepest layer the shared
    backbone returns) up to its last feature stage: ``prefix`` (frozen) then ``last`` (the stage that
    fine-tuning trains). Input ``(B, C_tap, H, W)``; output ``(B, channels, H', W')``.

    ``weights`` as in :class:`lineguard.models.backbone.FeatureExtractor`; a served line loads its own stored copy
    of these weights, so ``"none"`` is used there.
    """

    def __init__(self, backbone: str, after: str, weights: str = "none") -> None:
        super().__init__()
        import timm

        from lineguard.models import weights as weights_mod
        from lineguard.models.backbone import create_feature_net, feature_layers

        valid = feature_layers(backbone)
        if after not in valid:
            raise ConfigError(f"unknown layer {after!r} for {backbone}: choose from {valid}")
        if after == valid[-1]:
            raise ConfigError(
                f"{after} is the last stage of {backbone}: there is no tail to run after it (use tail='none')"
            )
        source = weights_mod.resolve(backbone, weights)
        kwargs: dict[str, Any] = {
            "pretrained": source.kind != "none",
            "features_only": True,
            "out_indices": (len(valid) - 1,),
        }
        if source.file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(source.file)}
        net: Any = create_feature_net(timm, backbone, kwargs)
        children = list(net.named_children())
        names = [name for name, _ in children]
        tap = after.replace(".", "_")
        if tap not in names:
            raise ConfigError(f"{backbone} has no stage {tap!r} to cut after (stages: {names})")
        stages = [module for _, module in children[names.index(tap) + 1 :]]
        self.prefix = nn.Sequential(*stages[:-1])
        self.last = stages[-1]
        self.channels = int(net.feature_info.channels()[-1])
        self.weights = source.describe()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> BackboneTail:
        """Always in eval mode: batch-norm statistics stay the pretrained ones (few images per line)."""
        return super().train(False)


class ImageClassifier(nn.Module):
    """Feature maps ``[(B, C_i, H_i, W_i)]`` -> logits ``(B, num_classes)``.

    Args:
        channels: channels of the served feature maps, shallow to deep (``FeatureExtractor.channels``).
        num_classes: two or more.
        tail: ``"none"`` (pool the served maps only), ``"frozen"`` (also the backbone's remaining
            pretrained stages) or ``"finetune"`` (the same, with its last stage trained).
        backbone, tap: the timm model and the deepest served layer (where the tail starts).
        hidden: width of the MLP's hidden layer; 0 = a linear head.
        dropout: on the standardised input vector and the hidden layer, while training.
        pooling: ``"avg"`` or ``"avgmax"``.
        tail_weights: where the tail's pretrained weights come from when fitting (serving loads the
            line's stored copy).
    """

    mean: torch.Tensor
    std: torch.Tensor
    temperature: torch.Tensor

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        tail: str = "frozen",
        backbone: str = DEFAULT_BACKBONE,
        tap: str = "blocks.4",
        hidden: int = 256,
        dropout: float = 0.2,
        pooling: str = "avgmax",
        tail_weights: str = "none",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        if tail not in TAILS or pooling not in POOLINGS:
            raise ConfigError(f"tail must be one of {TAILS} and pooling one of {POOLINGS}, got {tail!r}, {pooling!r}")
        if hidden < 0 or not 0 <= dropout < 1 or not channels:
            raise ConfigError(f"hidden must be >= 0, dropout in [0, 1) and channels non-empty; got {hidden}, {dropout}")
        self.channels = [int(c) for c in channels]
        self.num_classes = num_classes
        self.tail_mode, self.backbone, self.tap = tail, backbone, tap
        self.hidden, self.dropout_p, self.pooling = hidden, dropout, pooling
        self.tail = BackboneTail(backbone, tap, tail_weights) if tail != "none" else None
        width = 2 if pooling == "avgmax" else 1
        self.in_features = width * (sum(self.channels) + (self.tail.channels if self.tail is not None else 0))
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.register_buffer("std", torch.zeros(self.in_features))
        self.register_buffer("temperature", torch.ones(()))
        self.drop = nn.Dropout(dropout)
        if hidden:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(self.in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.head = nn.Linear(self.in_features, num_classes)
        if self.tail is not None and tail == "finetune":
            self.tail.last.requires_grad_(True)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable), enough to rebuild the module before loading its state."""
        return {
            "channels": self.channels,
            "num_classes": self.num_classes,
            "tail": self.tail_mode,
            "backbone": self.backbone,
            "tap": self.tap,
            "hidden": self.hidden,
            "dropout": self.dropout_p,
            "pooling": self.pooling,
        }

    @property
    def is_fitted(self) -> bool:
        return bool((self.std > 0).all())

    # --- the frozen part and the trained part, split so that fitting can cache the frozen one ----------
    @torch.no_grad()
    def frozen_inputs(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What no training changes: the pooled vector ``(B, D0)`` and, when the last tail stage is
        fine-tuned, its input map ``(B, C, h, w)`` (else None)."""
        got = [int(f.shape[1]) for f in features]
        if got != self.channels:
            raise FeatureMismatchError(
                f"the classifier was fitted on feature maps with channels {self.channels} but got {got}: "
                "score with the backbone and layers recorded in the line's model card"
            )
        pooled = [_pool(f.float(), self.pooling) for f in features]
        deep = None
        if self.tail is not None:
            deep = self.tail.prefix(features[-1].float())
            if self.tail_mode == "frozen":
                pooled.append(_pool(self.tail.last(deep), self.pooling))
                deep = None
        return torch.cat(pooled, dim=1), deep

    def vector(self, pooled: torch.Tensor, deep: torch.Tensor | None) -> torch.Tensor:
        """The full pooled vector ``(B, in_features)``, before standardisation."""
        if deep is None:
            return pooled
        assert self.tail is not None
        return torch.cat([pooled, _pool(self.tail.last(deep.float()), self.pooling)], dim=1)

    def logits_from(self, pooled: torch.Tensor, deep: torch.Tensor | None) -> torch.Tensor:
        if not self.is_fitted:
            raise NotFittedError("the classifier is not fitted: fit the line first (lineguard fit classifier)")
        z = (self.vector(pooled, deep) - self.mean) / self.std
        return self.head(self.drop(z))  # type: ignore[no-any-return]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Raw (untempered) logits ``(B, num_classes)``."""
        return self.logits_from(*self.frozen_inputs(features))

    @torch.no_grad()
    def fit_standardizer(self, vectors: torch.Tensor) -> None:
        """Mean and std of the training vectors ``(N, in_features)`` (a constant feature gets std 1)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.in_features or vectors.shape[0] < 2:
            raise DataError(f"need at least 2 vectors of width {self.in_features}, got {tuple(vectors.shape)}")
        std = vectors.double().std(0)
        self.mean = vectors.double().mean(0).float()
        self.std = torch.where(std > 1e-6, std, torch.ones_like(std)).float()

    @torch.inference_mode()
    def probabilities(self, features: list[torch.Tensor]) -> np.ndarray:
        """Temperature-scaled class probabilities ``(B, num_classes)`` (float64 NumPy)."""
        logits = self.forward(features).double() / float(self.temperature)
        return torch.softmax(logits, dim=1).cpu().numpy()

    # --- persistence -------------------------------------------------------------------------------
    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Every tensor that serving needs (the tail's weights included): copies, detached and on the CPU
        (a copy, not a view of the live weights: early stopping keeps snapshots while training goes on)."""
        return {k: v.detach().cpu().clone().contiguous() for k, v in self.state_dict().items()}

    def load_fitted_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        expected = set(self.state_dict())
        if set(tensors) != expected:
            raise CorruptModelError(
                f"saved classifier state does not match the head: missing {sorted(expected - set(tensors))[:5]}, "
                f"unexpected {sorted(set(tensors) - expected)[:5]}"
            )
        self.load_state_dict(dict(tensors))


class LineClassifier:
    """A classifier line as served: the fitted module, its classes, decision threshold and severity rules."""

    def __init__(
        self,
        model: ImageClassifier,
        classes: Sequence[str],
        normal_class: str | None,
        threshold: float = 0.5,
        severity: SeverityRules | None = None,
    ) -> None:
        if len(classes) != model.num_classes:
            raise ConfigError(f"{len(classes)} class names for a classifier of {model.num_classes} classes")
        if normal_class is not None and normal_class not in classes:
            raise ConfigError(f"normal class {normal_class!r} is not one of {list(classes)}")
        self.model = model.eval()
        self.classes = list(classes)
        self.normal_class = normal_class
        self.normal_index = None if normal_class is None else self.classes.index(normal_class)
        self.threshold = threshold
        self.severity = severity or SeverityRules()

    def predict(self, features: list[torch.Tensor]) -> list[ClassDecision]:
        return decide(self.model.probabilities(features), self.normal_index, self.threshold, self.severity)
