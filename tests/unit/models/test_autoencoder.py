"""The sensor AutoEncoder, its scaler and the fitted sensor model: the math, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineguard.errors import ConfigError, CorruptModelError, FeatureMismatchError, NotFittedError
from lineguard.models.autoencoder import FeatureScaler, SensorAutoEncoder
from lineguard.models.sensor_model import SensorModel, gelu
from lineguard.models.threshold import Threshold
from lineguard.training.options import SensorTrainOptions as TrainOptions
from lineguard.training.synthetic_sensor import normal_operation
from lineguard.training.train_sensor import train_autoencoder


def test_scaler_standardises_and_inverts() -> None:
    x = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [5.0, 50.0, 5.0]])
    scaler = FeatureScaler(3)
    with pytest.raises(NotFittedError, match="fit the line first"):
        scaler(x)
    scaler.fit(x)
    z = scaler(x)
    assert torch.allclose(z[:, :2].mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(z[:, :2].std(0), torch.ones(2), atol=1e-6)
    assert torch.isfinite(z).all() and float(scaler.std[2]) > 0  # a constant sensor: a floor, no division by zero
    assert torch.allclose(scaler.inverse(z), x, atol=1e-5)
    assert set(scaler.state_dict()) == {"mean", "std"}  # buffers: stored with the weights


def test_shapes_widths_and_bad_input() -> None:
    model = SensorAutoEncoder(12, hidden=[16, 8], latent=3)
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [16, 8, 3]
    assert [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)] == [8, 16, 12]
    assert SensorAutoEncoder(12).latent == 4
    with pytest.raises(ConfigError, match="at least 2 features"):
        SensorAutoEncoder(1)
    model.scaler.fit(torch.randn(10, 12))
    with pytest.raises(FeatureMismatchError, match=r"shape \(B, 12\)"):
        model(torch.zeros(2, 5))


@pytest.fixture(scope="module")
def trained() -> tuple[SensorAutoEncoder, np.ndarray]:
    rng = np.random.default_rng(0)
    values = normal_operation(rng, 3000).astype(np.float32)
    model = SensorAutoEncoder(values.shape[1])
    model.scaler.fit(torch.from_numpy(values[:2500]))
    with torch.no_grad():
        train_z, val_z = (model.scaler(torch.from_numpy(v)).numpy() for v in (values[:2500], values[2500:]))
    result = train_autoencoder(model, train_z, val_z, TrainOptions(epochs=120, workers=0))
    assert result.history["best_val_loss"] < 0.1  # learnt the relations (an untrained net is near 1.0)
    return model, values[2500:]


def test_score_and_shares_point_at_the_faulty_sensor(trained: tuple[SensorAutoEncoder, np.ndarray]) -> None:
    model, normal = trained
    faulty = normal.copy()
    faulty[:, 4] += 4 * normal[:, 4].std()  # temperature 2 drifts away from what load and ambient explain
    with torch.no_grad():
        ok, bad = model(torch.from_numpy(normal)), model(torch.from_numpy(faulty))
    assert float(bad.score.median()) > 10 * float(ok.score.median())
    assert torch.allclose(bad.shares().sum(1), torch.ones(len(faulty)), atol=1e-5)
    assert (bad.shares().argmax(1) == 4).float().mean() > 0.9
    assert torch.allclose(ok.score, ok.errors.mean(1))
    assert float((ok.expected - torch.from_numpy(normal)).abs().mean()) < float(
        (bad.expected - torch.from_numpy(faulty)).abs().mean()
    )


def test_numpy_scoring_matches_the_torch_module(trained: tuple[SensorAutoEncoder, np.ndarray]) -> None:
    model, normal = trained
    faulty = normal[:50].copy()
    faulty[:, 7] += 5 * normal[:, 7].std()
    readings = np.concatenate([normal[:50], faulty])
    sensor = SensorModel.from_torch(model, Threshold(0.05, "test", 0.01), [f"s{i}" for i in range(12)], top_k=3)
    with torch.no_grad():
        reference = model(torch.from_numpy(readings))
    out = sensor.predict(readings)
    np.testing.assert_allclose(out.scores, reference.score.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.expected, reference.expected.numpy(), rtol=1e-4, atol=1e-4)
    top_share, top_index = reference.shares().topk(3, dim=1)
    np.testing.assert_array_equal(out.top_index[50:, 0], top_index[50:, 0].numpy())
    np.testing.assert_allclose(out.top_share, top_share.numpy(), rtol=1e-3, atol=1e-5)
    assert (out.top_index[50:, 0] == 7).mean() > 0.9
    x = np.linspace(-6, 6, 1001, dtype=np.float32)
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_sensor_model_answers_in_columns(trained: tuple[SensorAutoEncoder, np.ndarray]) -> None:
    model, normal = trained
    names = [f"s{i}" for i in range(12)]
    threshold = Threshold(value=0.05, method="test", reference=0.01)
    sensor = SensorModel.from_torch(model, threshold, names, top_k=3)
    out = sensor.predict(normal[:7].astype(np.float64))
    assert out.scores.shape == (7,) and out.top_index.shape == out.top_share.shape == (7, 3)
    assert (np.diff(out.top_share, axis=1) <= 0).all()
    np.testing.assert_array_equal(out.is_anomaly, out.scores > 0.05)
    np.testing.assert_allclose(out.normalized, np.maximum(0, (out.scores - 0.01) / 0.04), rtol=1e-6)
    assert SensorModel.from_torch(model, threshold, names, top_k=12).predict(normal[:2]).top_index.shape == (2, 12)
    with pytest.raises(FeatureMismatchError, match=r"\(B, 12\)"):
        sensor.predict(normal[:2, :5])
    with pytest.raises(CorruptModelError, match="feature names"):
        SensorModel.from_torch(model, threshold, names[:3])
    with pytest.raises(CorruptModelError, match="no encoder layers"):
        SensorModel({"scaler.mean": np.zeros(12), "scaler.std": np.ones(12)}, threshold, names)


def test_fitted_state_is_a_copy(trained: tuple[SensorAutoEncoder, np.ndarray]) -> None:
    model, _ = trained
    state = model.fitted_state()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(state["encoder.0.weight"], model.state_dict()["encoder.0.weight"])
    model.load_state_dict(state)


@pytest.mark.parametrize("value", [3e38, -3.4e38, 1e30, 1e8])
def test_a_reading_far_outside_the_fitted_range_is_a_finite_anomaly(
    trained: tuple[SensorAutoEncoder, np.ndarray], value: float
) -> None:
    # 3e38 passes the float range check, overflowed float32 and was answered "score": null, "normal"
    model, normal = trained
    sensor = SensorModel.from_torch(model, Threshold(0.05, "test", 0.01), [f"s{i}" for i in range(12)], top_k=3)
    readings = np.concatenate([normal[:3], np.full((1, 12), value), normal[3:4]]).astype(np.float64)
    readings[4, 5] = value  # one channel off
    out = sensor.predict(readings)
    assert np.isfinite(out.scores).all() and np.isfinite(out.normalized).all()
    assert np.isfinite(out.top_share).all() and np.isfinite(out.input_rms).all()
    assert out.is_anomaly.tolist() == [False, False, False, True, True]
    assert out.top_index[4, 0] == 5 and out.top_share[4, 0] > 0.99
    np.testing.assert_allclose(out.scores[:3], sensor.predict(normal[:3]).scores, rtol=1e-5)
