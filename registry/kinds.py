"""The kinds of line LineGuard fits and serves.

A kind decides what a line takes (an image or a vector of sensor values), what it is fitted on and what
it answers. The enum is the one place a kind is named; what each kind does is its adapter
(:mod:`lineguard.training.kinds`, one module per kind, registered like the anomaly heads).
"""

from __future__ import annotations

from enum import StrEnum

from lineguard.errors import ConfigError


class LineKind(StrEnum):
    IMAGE_ANOMALY = "image-anomaly"  # images; fitted on normal images; anomaly score, map, OK/NG
    SENSOR_ANOMALY = "sensor-anomaly"  # sensor readings; fitted on normal rows; reconstruction error, status
    IMAGE_CLASSIFIER = "image-classifier"  # images; fitted on labelled class folders; class, confidence, severity

    @property
    def short(self) -> str:
        """The word of the command line (``lineguard fit image|sensor|classifier``)."""
        return {"image-anomaly": "image", "sensor-anomaly": "sensor", "image-classifier": "classifier"}[self.value]

    @property
    def takes_images(self) -> bool:
        return self is not LineKind.SENSOR_ANOMALY

    @property
    def score_name(self) -> str:
        """What the thresholded number of this kind is called."""
        return "defect confidence" if self is LineKind.IMAGE_CLASSIFIER else "anomaly score"

    @classmethod
    def parse(cls, text: str) -> LineKind:
        """A kind by its name (``image-anomaly``) or its short name (``image``)."""
        for kind in cls:
            if text in (kind.value, kind.short):
                return kind
        names = ", ".join(f"{k.short} ({k.value})" for k in cls)
        raise ConfigError(f"unknown line kind {text!r}: choose one of {names}")


IMAGE_KINDS = (LineKind.IMAGE_ANOMALY, LineKind.IMAGE_CLASSIFIER)
