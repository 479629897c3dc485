"""The typed model card: every section read by name, cards of schema 1 (written before the sections were
typed, by stores in service today) read and served, and an evaluation recomputed at a new threshold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.models.metrics import Confusion
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.sections import Evaluation
from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import to_bytes

V1 = Path(__file__).parent / "cards_v1"  # cards written by LineGuard before the redesign (score lists trimmed)


def v1(line: str) -> ModelCard:
    return ModelCard.model_validate_json((V1 / f"{line}.json").read_text())


def test_schema_1_cards_of_every_kind_read_into_the_typed_sections() -> None:
    image = v1("press-1")
    assert image.schema_version == 2 and image.kind is LineKind.IMAGE_ANOMALY
    assert image.threshold.method.startswith("normal_") and image.threshold.value > image.threshold.reference
    assert image.calibration.normal is not None and image.calibration.normal.scores  # was the top level
    assert (
        image.calibration.input is not None and image.calibration.reference_scores() == image.calibration.normal.scores
    )
    assert image.metrics is not None and set(image.metrics.per_defect_type) == {"scratch", "spot", "dent"}
    assert isinstance(image.metrics.confusion, Confusion) and image.training is None

    sensor = v1("spindle-1")
    assert sensor.inputs is not None and sensor.inputs.n_features == 12
    assert sensor.training is not None and sensor.training.workers == 0 and sensor.training.epochs_run > 0

    classifier = v1("sorter-1")
    calibration = classifier.calibration
    assert calibration.temperature is not None and calibration.temperature.temperature > 0
    assert calibration.normal is not None and calibration.defect_confidence is not None  # normal_defect_confidence
    assert classifier.metrics is not None and classifier.metrics.classes is not None
    assert classifier.data is not None and classifier.data.per_split is not None
    assert classifier.feedback_labels() == tuple(classifier.classifier.classes)  # type: ignore[union-attr]
    assert image.feedback_labels() == ("ok", "ng") and image.normal_label() == "ok"


def test_a_store_written_before_the_redesign_still_serves(tmp_path: Path) -> None:
    """A schema-1 card beside its tensors: the version loads and scores (here a sensor line, NumPy alone)."""
    card = json.loads((V1 / "spindle-1.json").read_text())
    model = SensorAutoEncoder(**card["head"]["params"])
    model.scaler.mean, model.scaler.std = torch.tensor(card["inputs"]["mean"]), torch.tensor(card["inputs"]["std"])
    blob = to_bytes(model.fitted_state())
    card["files"] = {"model.safetensors": hashlib.sha256(blob).hexdigest()}
    folder = tmp_path / "store" / "spindle-1" / "v1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(blob)
    (folder / "card.json").write_text(json.dumps(card))
    (folder.parent / "CURRENT").write_text(json.dumps({"version": "v1"}))
    store = ModelStore(tmp_path / "store")
    loaded = sensor_model(store, store.read_card("spindle-1"))
    out = loaded.predict(np.asarray([card["inputs"]["mean"]], dtype=np.float32))
    assert out.scores.shape == (1,) and np.isfinite(out.scores).all()
    assert loaded.threshold.value == card["threshold"]["value"]


def test_an_evaluation_at_another_threshold_leaves_no_rate_stale() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.4, 0.95, 0.6])
    types = ["good"] * 4 + ["crack", "crack", "spot", "spot"]
    fitted = Evaluation.of_labelled(labels, scores, 0.5, types)
    assert fitted.per_defect_type["crack"].miss_rate == 0.5 and fitted.miss_rate == 0.25
    moved = fitted.at(0.7)
    assert moved.threshold == 0.7 and moved.miss_rate == 0.5 and moved.over_detection_rate == 0.25
    assert moved.per_defect_type["crack"].miss_rate == 0.5 and moved.per_defect_type["spot"].miss_rate == 0.5
    assert moved.confusion == Confusion.at(labels, scores, 0.7)
    again = moved.at(0.5)  # back: the same figures as the fit's
    assert again.model_dump(exclude={"note"}) == fitted.model_dump(exclude={"note"})
    assert "test_scores" not in fitted.public() and fitted.public()["per_defect_type"]["spot"]["n"] == 2


def test_cards_refuse_what_does_not_fit_the_sections() -> None:
    data = json.loads((V1 / "press-1.json").read_text())
    data["metrics"]["no_such_field"] = 1
    with pytest.raises(ValueError, match="no_such_field"):
        ModelCard.model_validate(data)
