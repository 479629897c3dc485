"""What the history says about a line: rates from feedback, the score histogram, drift against the
calibration of its model, and a threshold suggestion. Queries (``lineguard.history.db``) plus math (``models``);
no Ray, no HTTP.

Scores are only comparable between versions that share fitted weights: a threshold or severity change
makes a new version with its parent's tensors, a new fit starts afresh. ``versions`` (the current
version's lineage, newest first) limits histograms, drift and suggestions to those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lineguard.errors import ConfigError
from lineguard.history.db import HistoryDB, HistoryQuery
from lineguard.models.drift import DriftRules, assess, worst
from lineguard.models.metrics import Confusion
from lineguard.models.rates import labelled_rates, percentiles, score_range, suggest_threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind


@dataclass(frozen=True)
class LineFacts:
    """What the reports need of a line's model card."""

    line: str
    kind: LineKind
    version: str
    threshold: float
    labels: tuple[str, ...]  # what feedback may say
    normal: str | None  # the label of a good part (None: a classifier without a normal class)
    reference_scores: tuple[float, ...]
    reference_inputs: tuple[float, ...]
    good_scores: tuple[float, ...] = ()  # held-out good parts of the fit (calibration)
    test_scores: tuple[float, ...] = ()  # the fit's labelled test parts, when it had some
    test_defective: tuple[bool, ...] = ()

    @classmethod
    def of(cls, card: ModelCard) -> LineFacts:
        calibration = card.calibration
        good = calibration.normal.scores if calibration.normal else []
        test = card.metrics.test_scores if card.metrics and card.metrics.test_scores else None
        return cls(
            card.line,
            card.kind,
            card.version,
            card.threshold.value,
            card.feedback_labels(),
            card.normal_label(),
            tuple(calibration.reference_scores()),
            tuple(calibration.input.scores if calibration.input else []),
            tuple(good),
            tuple(test.scores if test else []),
            tuple(bool(label) for label in (test.labels if test else [])),
        )

    def defective(self, labels: np.ndarray) -> np.ndarray:
        """Labels -> True where the part is defective (``normal`` is the one good label)."""
        return np.asarray([label != self.normal for label in labels], dtype=bool)


def line_stats(db: HistoryDB, facts: LineFacts, since: float, max_rows: int) -> dict[str, Any]:
    """Counts, anomaly rate, latency percentiles and, over the labelled parts, confusion counts with the
    miss and over-detection rates (plus the class confusion of a classifier line)."""
    query = HistoryQuery(line=facts.line, since=since)
    total = db.count(query)
    recent = db.arrays(query, ("is_anomaly", "latency_ms", "model_version", "alarm"), max_rows)
    labelled = db.arrays(
        HistoryQuery(line=facts.line, since=since, labelled=True), ("is_anomaly", "decision", "label"), max_rows
    )
    versions, counts = np.unique(recent["model_version"].astype(str), return_counts=True)
    out: dict[str, Any] = {
        "line": facts.line,
        "kind": facts.kind,
        "predictions": total,
        "rows_used": len(recent["is_anomaly"]),
        "anomalies": int(recent["is_anomaly"].sum()),
        "anomaly_rate": float(recent["is_anomaly"].mean()) if len(recent["is_anomaly"]) else None,
        "latency_ms": percentiles(recent["latency_ms"]),
        "by_version": {str(v): int(c) for v, c in zip(versions, counts, strict=True)},
        "labelled": len(labelled["label"]),
    }
    if facts.kind is LineKind.SENSOR_ANOMALY:  # events as well as readings: alarms started and ended
        alarms = recent["alarm"].astype(str)
        out["alarms"] = {"started": int((alarms == "start").sum()), "ended": int((alarms == "end").sum())}
    if facts.normal is not None:
        out["confusion"] = Confusion.of(facts.defective(labelled["label"]), labelled["is_anomaly"]).to_dict()
    if facts.kind is LineKind.IMAGE_CLASSIFIER:
        matrix = {true: dict.fromkeys(facts.labels, 0) for true in facts.labels}
        for true, pred in zip(labelled["label"], labelled["decision"], strict=True):
            if true in matrix and pred in matrix[true]:
                matrix[true][pred] += 1
        right = sum(matrix[c][c] for c in facts.labels)
        out["classes"] = {
            "matrix": matrix,
            "accuracy": right / len(labelled["label"]) if len(labelled["label"]) else None,
            "note": "rows: the operator's label; columns: the class the line answered",
        }
    return out


def score_histogram(
    db: HistoryDB, facts: LineFacts, versions: tuple[str, ...], since: float, max_rows: int, bins: int = 30
) -> dict[str, Any]:
    """Counts of the line's scores in shared bins, split by the operator's label (good / defective /
    unlabelled), with the threshold; only versions whose scores compare with the current one."""
    rows = db.arrays(HistoryQuery(line=facts.line, since=since, versions=versions), ("score", "label"), max_rows)
    scores, labels = rows["score"], rows["label"]
    finite = np.isfinite(scores)
    scores, labels = scores[finite], labels[finite]
    low = min(facts.threshold, float(scores.min()) if scores.size else facts.threshold)
    high = max(facts.threshold, float(scores.max()) if scores.size else facts.threshold)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    groups = {
        "good": np.asarray([lab is not None and lab == facts.normal for lab in labels], dtype=bool),
        "defective": np.asarray([lab is not None and lab != facts.normal for lab in labels], dtype=bool),
        "unlabelled": np.asarray([lab is None for lab in labels], dtype=bool),
    }
    return {
        "line": facts.line,
        "version": facts.version,
        "versions": list(versions),
        "threshold": facts.threshold,
        "n": int(scores.size),
        "edges": edges.tolist(),
        "counts": {name: np.histogram(scores[mask], edges)[0].tolist() for name, mask in groups.items()},
        "score": facts.kind.score_name,
    }


def line_drift(
    db: HistoryDB, facts: LineFacts, versions: tuple[str, ...], window: int, rules: DriftRules
) -> dict[str, Any]:
    """The last ``window`` scores (and input statistics) against the version's calibration."""
    rows = db.arrays(
        HistoryQuery(line=facts.line, versions=versions), ("score", "input_stat", "ts", "is_anomaly"), window
    )
    measures: dict[str, Any] = {
        "score": assess(np.asarray(facts.reference_scores), rows["score"], rules).to_dict(),
    }
    if facts.reference_inputs:
        measures["input"] = assess(np.asarray(facts.reference_inputs), rows["input_stat"], rules).to_dict()
    ts = rows["ts"]
    return {
        "line": facts.line,
        "version": facts.version,
        "status": worst([m["status"] for m in measures.values()]),
        "window": window,
        "anomaly_rate": float(rows["is_anomaly"].mean()) if ts.size else None,
        "recent_from": float(ts.min()) if ts.size else None,
        "recent_to": float(ts.max()) if ts.size else None,
        "measures": measures,
        "rules": {k: getattr(rules, k) for k in ("psi_warning", "psi_drift", "ks_alpha", "min_recent")},
    }


def _labelled_feedback(
    db: HistoryDB, facts: LineFacts, versions: tuple[str, ...], since: float, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and defective flags of the parts operators labelled (comparable versions only)."""
    if facts.normal is None:
        raise ConfigError(f"line {facts.line!r} has no normal class: a threshold on defect confidence does not apply")
    rows = db.arrays(
        HistoryQuery(line=facts.line, since=since, versions=versions, labelled=True), ("score", "label"), max_rows
    )
    keep = np.isfinite(rows["score"])
    return rows["score"][keep], facts.defective(rows["label"][keep])


def threshold_rates(
    db: HistoryDB,
    facts: LineFacts,
    versions: tuple[str, ...],
    since: float,
    max_rows: int,
    threshold: float | None,
) -> dict[str, Any]:
    """Miss and over-detection rates that ``threshold`` (default: the current one) would give on the
    fit's own labelled data (held-out good parts and the test set) and on the operators' feedback."""
    feedback = _labelled_feedback(db, facts, versions, since, max_rows)
    good = np.asarray(facts.good_scores, dtype=np.float64)
    calibration = (
        np.concatenate([good, np.asarray(facts.test_scores, dtype=np.float64)]),
        np.concatenate([np.zeros(good.size, dtype=bool), np.asarray(facts.test_defective, dtype=bool)]),
    )
    combined = (np.concatenate([calibration[0], feedback[0]]), np.concatenate([calibration[1], feedback[1]]))
    t = facts.threshold if threshold is None else float(threshold)
    sources = {"calibration": calibration, "feedback": feedback, "combined": combined}
    span = score_range(combined[0], facts.threshold)
    if facts.kind is LineKind.IMAGE_CLASSIFIER:  # a defect confidence threshold lies strictly between 0 and 1
        span = {"min": max(span["min"], 0.001), "max": min(span["max"], 0.999)}
    return {
        "line": facts.line,
        "version": facts.version,
        "threshold": t,
        "current_threshold": facts.threshold,
        "score": facts.kind.score_name,
        "range": span,
        **{name: labelled_rates(scores, defective, t) for name, (scores, defective) in sources.items()},
    }


def threshold_suggestion(
    db: HistoryDB,
    facts: LineFacts,
    versions: tuple[str, ...],
    since: float,
    max_rows: int,
    target_miss_rate: float | None,
    target_over_detection_rate: float | None,
) -> dict[str, Any]:
    scores, defective = _labelled_feedback(db, facts, versions, since, max_rows)
    suggestion = suggest_threshold(
        scores,
        defective,
        target_miss_rate=target_miss_rate,
        target_over_detection_rate=target_over_detection_rate,
    )
    return {"line": facts.line, "version": facts.version, "current_threshold": facts.threshold, **suggestion.to_dict()}
