"""The classifier head: tail stages, the frozen / trained split, temperature, decisions, severity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineguard.errors import CorruptModelError, FeatureMismatchError, NotFittedError
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.calibration import expected_calibration_error, fit_temperature, nll, softmax
from lineguard.models.classifier import BackboneTail, ImageClassifier, LineClassifier
from lineguard.models.decisions import SeverityRules, decide
from lineguard.models.metrics import ClassScore, class_metrics


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor("tf_efficientnet_lite0", ("blocks.2", "blocks.4"), "none", "cpu", "fp32")


def test_tail_runs_the_stages_after_the_served_tap(extractor: FeatureExtractor) -> None:
    """The tail continues where the shared backbone stops: together they equal the full network."""
    tail = BackboneTail("tf_efficientnet_lite0", "blocks.4")
    assert tail.channels == 320 and not any(p.requires_grad for p in tail.parameters())
    full = FeatureExtractor("tf_efficientnet_lite0", ("blocks.4", "blocks.6"), "none", "cpu", "fp32")
    tail.load_state_dict(
        {f"prefix.0.{k.removeprefix('blocks_5.')}": v for k, v in full.model.state_dict().items() if "blocks_5" in k}
        | {f"last.{k.removeprefix('blocks_6.')}": v for k, v in full.model.state_dict().items() if "blocks_6" in k}
    )
    images = torch.randn(2, 3, 64, 64)
    shallow, deep = full.extract(images)
    with torch.no_grad():
        out = tail.last(tail.prefix(shallow))
    assert out.shape == deep.shape == (2, 320, 2, 2)
    torch.testing.assert_close(out, deep, rtol=1e-4, atol=1e-4)
    resnet = BackboneTail("resnet18", "layer3")  # another family: the tail is its last stage alone
    assert resnet.channels == 512 and len(resnet.prefix) == 0


@pytest.mark.parametrize(
    ("backbone", "after", "message"),
    [("tf_efficientnet_lite0", "blocks.6", "no tail"), ("tf_efficientnet_lite0", "blocks.9", "choose from")],
)
def test_tail_refuses_bad_taps(backbone: str, after: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackboneTail(backbone, after)


@pytest.mark.parametrize(("tail", "width"), [("none", 2 * 152), ("frozen", 2 * 472), ("finetune", 2 * 472)])
def test_frozen_and_trained_parts_compose(extractor: FeatureExtractor, tail: str, width: int) -> None:
    model = ImageClassifier(extractor.channels, 3, tail=tail, hidden=16)
    features = extractor.extract(torch.randn(4, 3, 64, 64))
    pooled, deep = model.frozen_inputs(features)
    assert (deep is not None) == (tail == "finetune")
    assert model.vector(pooled, deep).shape == (4, width) == (4, model.in_features)
    with pytest.raises(NotFittedError, match="fit the line first"):
        model(features)
    model.fit_standardizer(torch.randn(10, width))
    model.eval()
    assert model(features).shape == (4, 3)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"head", "tail"} if tail == "finetune" else {"head"})
    if tail == "finetune":
        assert all(p.requires_grad for p in model.tail.last.parameters())  # type: ignore[union-attr]
        assert not any(p.requires_grad for p in model.tail.prefix.parameters())  # type: ignore[union-attr]
    with pytest.raises(FeatureMismatchError, match="channels"):
        model.frozen_inputs(features[:1])


def test_state_round_trip_keeps_answers(extractor: FeatureExtractor) -> None:
    model = ImageClassifier(extractor.channels, 2, tail="finetune", hidden=8)
    features = extractor.extract(torch.randn(3, 3, 64, 64))
    model.fit_standardizer(
        model.vector(*model.frozen_inputs(features)).repeat(2, 1) + torch.randn(6, model.in_features)
    )
    model.temperature.fill_(2.5)
    with torch.no_grad():
        model.tail.last[0].conv_pw.weight.mul_(1.5)  # type: ignore[union-attr]  # "fine-tuned"
    snapshot = model.fitted_state()
    with torch.no_grad():
        next(model.head.parameters()).add_(1.0)  # training goes on: a snapshot must not follow it
    assert not torch.equal(snapshot["head.0.weight"], model.state_dict()["head.0.weight"])
    model.load_fitted_state(snapshot)
    rebuilt = ImageClassifier(**model.params())
    rebuilt.load_fitted_state(model.fitted_state())
    np.testing.assert_allclose(rebuilt.eval().probabilities(features), model.eval().probabilities(features))
    with pytest.raises(CorruptModelError, match="does not match"):
        ImageClassifier(extractor.channels, 2, tail="none").load_fitted_state(model.fitted_state())


def test_temperature_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 4))
    z = logits / 2.5
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)
    separable = np.eye(3)[[0, 1, 2, 0]] * 5
    assert fit_temperature(separable, np.array([0, 1, 2, 0])) >= 1.0  # no errors: never sharpened


def test_decisions_use_defect_confidence_and_severity() -> None:
    rules = SeverityRules.from_dict({"low": 0.6, "high": 0.9})
    probabilities = np.array(
        [
            [0.05, 0.90, 0.05],  # good
            [0.40, 0.35, 0.25],  # defect confidence 0.65: a crack (the likeliest defect), low
            [0.95, 0.03, 0.02],  # crack, high
            [0.30, 0.55, 0.15],  # defect confidence 0.45: good
        ]
    )
    out = decide(probabilities, normal_index=1, threshold=0.5, severity=rules)
    assert [d.index for d in out] == [1, 0, 0, 1]
    assert [d.severity for d in out] == ["none", "low", "high", "none"]
    assert out[1].defect_confidence == pytest.approx(0.65) and out[1].confidence == pytest.approx(0.40)
    strict = decide(probabilities, normal_index=1, threshold=0.7, severity=rules)
    assert [d.index for d in strict] == [1, 1, 0, 1]  # a higher threshold passes the 0.65 part
    assert [d.severity for d in strict] == ["none", "none", "high", "none"]  # passed as good: no severity
    no_normal = decide(probabilities, normal_index=None, threshold=0.5, severity=rules)
    assert [d.index for d in no_normal] == [1, 0, 0, 1] and no_normal[0].severity is None


@pytest.mark.parametrize(
    "rules",
    [{"high": 0.6, "low": 0.9, "x": 0.9}, {"none": 0.5}, {"high": 1.5}, {"high": 0.0}, {"": 0.5}],
)
def test_bad_severity_rules_are_refused(rules: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="severity"):
        SeverityRules.from_dict(rules)


def test_line_classifier_checks_its_classes(extractor: FeatureExtractor) -> None:
    model = ImageClassifier(extractor.channels, 2, tail="none")
    with pytest.raises(ValueError, match="3 class names"):
        LineClassifier(model, ["a", "b", "c"], None)
    with pytest.raises(ValueError, match="normal class 'ok'"):
        LineClassifier(model, ["good", "bad"], "ok")


def test_class_metrics_and_calibration_error() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probabilities = np.eye(3)[predicted] * 0.7 + 0.1
    metrics = class_metrics(labels, predicted, probabilities, ["a", "b", "c"])
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.confusion_matrix.rows_true_columns_predicted == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics.per_class["b"] == ClassScore(precision=2 / 3, recall=1.0, f1=0.8, support=2)
    assert metrics.per_class["c"].precision == 1.0 and metrics.per_class["c"].recall == 0.5
    assert expected_calibration_error(probabilities, labels) == pytest.approx(abs(0.8 - 4 / 6))
    assert expected_calibration_error(np.zeros((0, 3)), []) is None
    two = class_metrics([0, 1, 1], [0, 1, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["good", "bad"])
    assert two.roc_auc == 1.0


def test_softmax_and_nll_agree_with_their_definitions() -> None:
    """One softmax and one NLL serve the temperature fit, the fit's calibration report and the evaluation."""
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    p = softmax(logits, 2.0)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    np.testing.assert_allclose(p, expected)
    assert nll(logits, [0, 2], 2.0) == pytest.approx(-np.log(expected[[0, 1], [0, 2]]).mean())
    big = np.array([[1000.0, -1000.0]])  # no overflow: computed in log space
    assert nll(big, [1]) == pytest.approx(2000.0) and softmax(big)[0, 0] == 1.0
