"""A line's scoring model: head + map smoothing + image score + threshold, on backbone features.

This is everything per line that sits after the shared backbone, i.e. what a scoring replica holds.

Image scores from a patch-score map (``aggregation``):

- ``"max"``: the worst cell (PatchCore's and PaDiM's papers). Sensitive to small defects, but one
  unusual-yet-normal spot flags the part.
- ``"mean"``: the average cell. Robust, sees large or diffuse defects, dilutes small ones.
- ``"local_global"`` (default): both, each divided by its median over held-out normal images, and the
  larger kept: a part is as anomalous as its worst spot *or* its whole surface, relative to normal
  parts. On magnetic_tile / battery_weld (PatchCore, lite0, 256 px) image AUROC was 0.960 / 0.961 with
  "max", 0.950 / 0.991 with "mean", and 0.962 / 0.984 with "local_global" (held-out split, seed 1).

Scores of "local_global" are ratios: about 1.0 for a typical normal part.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lineguard.errors import ConfigError, CorruptModelError, DataError, NotFittedError
from lineguard.models.decisions import AnomalyDecision
from lineguard.models.heads import AnomalyHead, build_head
from lineguard.models.postprocess import gaussian_blur
from lineguard.models.spec import AGGREGATIONS
from lineguard.models.threshold import Threshold


class AnomalyScorer(nn.Module):
    """Args:
    head: a fitted (or to-be-fitted) anomaly head.
    aggregation: "local_global", "max" or "mean" (ignored for heads that score images themselves).
    blur_sigma: Gaussian smoothing of the patch-score map, in feature-grid cells (1 cell = the stride
        of the finest layer, 8 px for the default backbone at 256 px).
    """

    local_ref: torch.Tensor
    global_ref: torch.Tensor
    map_low: torch.Tensor
    normal_peak: torch.Tensor

    def __init__(self, head: AnomalyHead, aggregation: str = "local_global", blur_sigma: float = 2.0) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation {aggregation!r} is not one of {AGGREGATIONS}")
        self.head = head
        self.aggregation = aggregation
        self.blur_sigma = blur_sigma
        self.threshold: Threshold | None = None
        # medians over held-out normal images: of the map max, the map mean and all map cells; and the
        # 99th percentile of the per-image map max (the brightest a normal overlay gets)
        for name in ("local_ref", "global_ref", "map_low", "normal_peak"):
            self.register_buffer(name, torch.zeros(()))

    # --- construction ------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"aggregation": self.aggregation, "blur_sigma": self.blur_sigma}

    @classmethod
    def build(cls, head_kind: str, head_params: dict[str, Any], scorer_params: dict[str, Any]) -> AnomalyScorer:
        return cls(build_head(head_kind, **head_params), **scorer_params)

    @property
    def is_calibrated(self) -> bool:
        return bool(self.local_ref > 0) and bool(self.global_ref > 0)

    # --- scoring -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def anomaly_maps(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Smoothed anomaly maps ``(B, h, w)``, and image scores when the head gives them itself."""
        out = self.head(features)
        return gaussian_blur(out.patch_scores, self.blur_sigma), out.image_scores

    @torch.inference_mode()
    def maps_and_scores(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed anomaly maps ``(B, h, w)`` and image scores ``(B,)``."""
        maps, direct = self.anomaly_maps(features)
        return maps, direct if direct is not None else self._aggregate(maps)

    def image_scores(self, maps: torch.Tensor, direct: torch.Tensor | None = None) -> torch.Tensor:
        """Image scores ``(B,)`` from smoothed maps (or the head's own scores when it gives them)."""
        return direct if direct is not None else self._aggregate(maps)

    def _aggregate(self, maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(1)
        if self.aggregation == "max":
            return flat.amax(1)
        if self.aggregation == "mean":
            return flat.mean(1)
        if not self.is_calibrated:
            raise NotFittedError(
                "image scorer is not calibrated on held-out normal images: fit the line first "
                "(lineguard fit image), or use aggregation='max' or 'mean'"
            )
        return torch.maximum(flat.amax(1) / self.local_ref, flat.mean(1) / self.global_ref)

    def predict(self, features: list[torch.Tensor], with_maps: bool = False) -> list[AnomalyDecision]:
        """Scores, decisions and (optionally) maps for a batch of backbone features."""
        if self.threshold is None:
            raise NotFittedError("the line has no threshold: fit or calibrate it first (lineguard fit image)")
        maps, scores = self.maps_and_scores(features)
        maps_np = maps.float().cpu().numpy() if with_maps else None
        threshold = self.threshold
        return [
            AnomalyDecision(
                anomaly_score=float(score),
                threshold=threshold.value,
                normalized_score=threshold.normalize(float(score)),
                is_anomaly=threshold.is_anomaly(float(score)),
                anomaly_map=maps_np[i] if maps_np is not None else None,
            )
            for i, score in enumerate(scores.float().cpu().tolist())
        ]

    # --- calibration -------------------------------------------------------------------------------
    def calibrate_aggregation(self, normal_maps: torch.Tensor) -> None:
        """Set the normal references from smoothed maps ``(N, h, w)`` of held-out normal images."""
        if normal_maps.ndim != 3 or normal_maps.shape[0] == 0:
            raise DataError("calibration needs the anomaly maps of at least one held-out normal image")
        flat = normal_maps.float().flatten(1)
        eps = torch.tensor(1e-12, device=flat.device)
        self.local_ref = torch.maximum(flat.amax(1).median(), eps)
        self.global_ref = torch.maximum(flat.mean(1).median(), eps)
        self.map_low = flat.median()
        self.normal_peak = torch.quantile(flat.amax(1), 0.99)

    def display_range(self) -> tuple[float, float]:
        """Map values drawn as 'nothing' and as 'full red' in overlays.

        The top is the level at which one cell alone would cross the threshold ("max" and
        "local_global"), else the brightest cell seen on held-out normal parts.
        """
        low = float(self.map_low)
        high = float(self.normal_peak)
        if self.threshold is not None and self.head.kind != "mean":
            if self.aggregation == "max":
                high = self.threshold.value
            elif self.aggregation == "local_global":
                high = self.threshold.value * float(self.local_ref)
        return low, max(high, low + 1e-6)

    # --- persistence -------------------------------------------------------------------------------
    def fitted_state(self) -> dict[str, torch.Tensor]:
        state = {f"head.{k}": v for k, v in self.head.fitted_state().items()}
        for name in ("local_ref", "global_ref", "map_low", "normal_peak"):
            state[f"scorer.{name}"] = getattr(self, name).detach().cpu().reshape(())
        return state

    def load_fitted_state(self, tensors: dict[str, torch.Tensor]) -> None:
        head_state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        self.head.load_fitted_state(head_state)
        for name in ("local_ref", "global_ref", "map_low", "normal_peak"):
            key = f"scorer.{name}"
            if key not in tensors:
                raise CorruptModelError(f"saved scorer state lacks {key}: the model files are incomplete")
            setattr(self, name, tensors[key].to(self.local_ref.device).reshape(()))
