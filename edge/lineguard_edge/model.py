"""A bundle, loaded: ``load(folder).predict(...)`` answers with the same fields as the service's per-line
answer, computed by the code the service runs (decoding, the threshold, the classifier's rule, severity,
the heatmap) around the exported graph.

- image anomaly: ``predict(image)`` / ``predict_many(images, heatmap=...)`` with bytes, a path or a PIL
  image -> ``line, model_version, anomaly_score, threshold, normalized_score, is_anomaly, inference_time_ms,
  sensor_id, heatmap_png, prediction_id``;
- classifier: the same calls -> ``prediction, confidence, probabilities, severity, defect_confidence,
  is_defect, sensor_id, timestamp, inference_time_ms`` and the line, version and id;
- sensor: ``predict(values)`` with one reading (a list of numbers, or a dict by feature name) ->
  ``score, threshold, normalized_score, status, is_anomaly, top_features, ...``; ``predict_readings`` takes
  a parsed request body (:mod:`lineguard_edge.readings`) and answers a batch in columns, as the service.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lineguard_edge import bundle as bundle_mod
from lineguard_edge.decisions import SeverityRules, Threshold, decide
from lineguard_edge.errors import ConfigError, CorruptModelError, FeatureMismatchError
from lineguard_edge.heatmap import normalise_map, overlay, png_bytes
from lineguard_edge.images import open_image, resize
from lineguard_edge.readings import Readings, readings_from
from lineguard_edge.runtime import Graph, open_graph
from lineguard_edge.sensor import summarise_errors

ImageInput = bytes | str | os.PathLike[str] | Image.Image
Answer = dict[str, Any]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


class EdgeModel:
    """One line's bundle with its graph open. Thread-safe for ``predict`` (the runtimes' sessions are)."""

    def __init__(self, bundle: bundle_mod.Bundle, threads: int | None = None) -> None:
        self.bundle = bundle
        self.spec = bundle.spec
        self.line = bundle.line
        self.version = bundle.version
        self.kind = bundle.kind
        self.graph: Graph = open_graph(bundle.runtime, bundle.graph_file(), threads)
        t = self.spec["threshold"]
        self.threshold = Threshold(value=float(t["value"]), method=str(t["method"]), reference=float(t["reference"]))
        rules = self.spec.get("severity")
        self.severity = SeverityRules.from_dict(rules) if rules else SeverityRules()

    @property
    def takes_images(self) -> bool:
        return self.kind != "sensor-anomaly"

    # --- images ------------------------------------------------------------------------------------
    def _image(self, item: ImageInput) -> Image.Image:
        image = self.spec["image"]
        if isinstance(item, Image.Image):
            decoded = item.convert("RGB")
        else:
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            decoded = open_image(data, int(image["max_pixels"]))
        return resize(decoded, int(image["size"]))

    def predict(self, item: Any, heatmap: bool = False, sensor_id: str | None = None) -> Answer:
        """One part (an image) or one reading (values in feature order, or a dict by feature name)."""
        if not self.takes_images:
            return self.predict_values(item, sensor_id)
        return self.predict_many([item], heatmap, sensor_id)[0]

    def predict_many(
        self, items: Sequence[ImageInput], heatmap: bool = False, sensor_id: str | None = None
    ) -> list[Answer]:
        """Images scored as one batch, one answer each (in order)."""
        if not self.takes_images:
            raise ConfigError(f"line {self.line!r} is a sensor line: send readings, not images")
        if heatmap and self.kind != "image-anomaly":
            raise ConfigError(f"line {self.line!r} is a classifier line: heatmaps belong to image-anomaly lines")
        start = time.perf_counter()
        images = [self._image(item) for item in items]
        if not images:
            return []
        batch = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
        outputs = self.graph.run({"images": batch})
        if self.kind == "image-anomaly":
            return self._anomaly_answers(images, outputs, heatmap, sensor_id, start)
        return self._class_answers(outputs[0], sensor_id, start)

    def _anomaly_answers(
        self, images: list[Image.Image], outputs: list[np.ndarray], heatmap: bool, sensor_id: str | None, start: float
    ) -> list[Answer]:
        scores, maps = outputs
        threshold = self.threshold
        low, high = self.spec["display_range"]
        elapsed = _ms(start)
        answers = []
        for i, score in enumerate(scores.astype(np.float64).tolist()):
            png = None
            if heatmap:
                png = base64.b64encode(png_bytes(overlay(images[i], normalise_map(maps[i], low, high)))).decode()
            answers.append(
                {
                    "line": self.line,
                    "model_version": self.version,
                    "anomaly_score": score,
                    "threshold": threshold.value,
                    "normalized_score": threshold.normalize(score),
                    "is_anomaly": threshold.is_anomaly(score),
                    "inference_time_ms": elapsed,
                    "sensor_id": sensor_id,
                    "heatmap_png": png,
                    "prediction_id": None,
                }
            )
        return answers

    def _class_answers(self, probabilities: np.ndarray, sensor_id: str | None, start: float) -> list[Answer]:
        classes: list[str] = self.spec["classes"]
        normal = self.spec.get("normal_class")
        normal_index = None if normal is None else classes.index(normal)
        decisions = decide(probabilities.astype(np.float64), normal_index, self.threshold.value, self.severity)
        elapsed = _ms(start)
        return [
            {
                "line": self.line,
                "model_version": self.version,
                "prediction": classes[d.index],
                "confidence": round(d.confidence, 6),
                "probabilities": {name: round(float(p), 6) for name, p in zip(classes, d.probabilities, strict=True)},
                "severity": d.severity,
                "defect_confidence": None if d.defect_confidence is None else round(d.defect_confidence, 6),
                "is_defect": None if normal_index is None else d.index != normal_index,
                "sensor_id": sensor_id,
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "inference_time_ms": elapsed,
                "prediction_id": None,
            }
            for d in decisions
        ]

    # --- sensor readings ---------------------------------------------------------------------------
    @property
    def features(self) -> list[str]:
        names: list[str] = self.spec.get("features", [])
        return names

    def predict_values(self, values: Sequence[float] | Mapping[str, float], sensor_id: str | None = None) -> Answer:
        """One reading, in feature order or by name."""
        body: dict[str, Any] = {"features": dict(values)} if isinstance(values, Mapping) else {"values": list(values)}
        if sensor_id is not None:
            body["sensor_id"] = sensor_id
        answer = self.predict_readings(readings_from(body, self.line, self.features, 1))
        assert isinstance(answer, dict)
        return answer

    def predict_readings(self, readings: Readings) -> Answer:
        """A parsed request: one reading answered as one, a batch answered in columns (as the service)."""
        if self.takes_images:
            raise ConfigError(f"line {self.line!r} is an image line: send images, not readings")
        values = readings.values
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise FeatureMismatchError(f"expected readings of shape (B, {len(self.features)}), got {values.shape}")
        start = time.perf_counter()
        errors, expected = self.graph.run({"values": np.ascontiguousarray(values, dtype=np.float64)})
        threshold = self.threshold
        out = summarise_errors(errors.astype(np.float64), threshold, int(self.spec["top_k"]))
        elapsed = _ms(start)
        names = self.features
        status = np.where(out.is_anomaly, "anomaly", "normal").tolist()
        if readings.single:
            top = [
                {
                    "feature": names[j],
                    "share": round(float(share), 4),
                    "value": float(values[0, j]),
                    "expected": round(float(expected[0, j]), 6),
                }
                for j, share in zip(out.top_index[0].tolist(), out.top_share[0].tolist(), strict=True)
            ]
            return {
                "line": self.line,
                "model_version": self.version,
                "score": float(out.scores[0]),
                "threshold": threshold.value,
                "normalized_score": float(out.normalized[0]),
                "status": status[0],
                "is_anomaly": bool(out.is_anomaly[0]),
                "top_features": top,
                "inference_time_ms": elapsed,
                "sensor_id": readings.sensor_id,
                "prediction_id": None,
            }
        return {
            "line": self.line,
            "model_version": self.version,
            "threshold": threshold.value,
            "count": len(out.scores),
            "anomalies": int(out.is_anomaly.sum()),
            "scores": out.scores.tolist(),
            "status": status,
            "top_features": np.asarray(names, dtype=object)[out.top_index].tolist(),
            "top_shares": out.top_share.round(4).tolist(),
            "inference_time_ms": elapsed,
            "sensor_id": readings.sensor_id,
            "prediction_ids": None,
        }


def load(folder: str | os.PathLike[str], threads: int | None = None) -> EdgeModel:
    """The bundle in ``folder``, checked against its manifest, ready to predict."""
    loaded = bundle_mod.read(folder)
    if loaded.kind not in ("image-anomaly", "image-classifier", "sensor-anomaly"):
        raise CorruptModelError(f"{loaded.folder / bundle_mod.MANIFEST}: unknown line kind {loaded.kind!r}")
    return EdgeModel(loaded, threads)
