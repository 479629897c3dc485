"""A stream scored one reading at a time answers what its whole series scored at once answers, for every
head; its state is bounded, forgotten when idle, and refuses readings out of order or of another width."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.errors import DataError
from lineguard.models.alarm import AlarmRule, run
from lineguard.models.pca_monitor import PCAMonitor
from lineguard.models.sensor_model import SensorModel
from lineguard.models.streams import OutOfOrderError, StreamBook
from lineguard.models.threshold import Threshold

N = 6


def series(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    base = np.sin(t / 20 + np.arange(N)) + 0.1 * rng.normal(size=(rows, N))
    return base * 3 + 10


def pca_model(lags: int = 2, smooth: int = 4) -> SensorModel:
    train = series(400, 0)
    mean, std = train.mean(0), train.std(0)
    monitor = PCAMonitor.fit((train - mean) / std, lags=lags, smooth=smooth)
    state = {"scaler.mean": mean.astype(np.float32), "scaler.std": std.astype(np.float32), **monitor.state()}
    threshold = Threshold(3.0, "test", 1.0)
    return SensorModel(state, threshold, [f"c{i}" for i in range(N)], 2, "pca", monitor.params())


def test_streamed_scores_equal_the_series_scored_at_once() -> None:
    model = pca_model()
    assert model.window == 6
    book = StreamBook()
    rule = AlarmRule(2, 3)
    data = {f"m{i}": series(50, i + 1) for i in range(5)}
    data["m4"][30:, 1] += 8  # a fault: the alarm starts
    got: dict[str, list[float]] = {k: [] for k in data}
    flags: dict[str, list[bool]] = {k: [] for k in data}
    sizes = [1, 3, 1, 7, 2]
    position = dict.fromkeys(data, 0)
    step = 0
    while any(position[k] < 50 for k in data):
        for k in data:
            if position[k] >= 50:
                continue
            size = sizes[step % len(sizes)]
            step += 1
            part = data[k][position[k] : position[k] + size]
            answer = book.score("line", k, model, rule, part)
            got[k] += answer.out.scores.tolist()
            flags[k] += answer.alarm.tolist()
            position[k] += len(part)
    for k, values in data.items():
        offline = model.predict(values)
        np.testing.assert_allclose(got[k], offline.scores, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(flags[k], run(rule, offline.scores, 3.0)[0])
    assert any(flags["m4"][30:]) and len(book) == 5


def test_a_stream_is_bounded_forgotten_when_idle_and_checked() -> None:
    model = pca_model()
    book = StreamBook(idle_s=10.0, max_streams=3)
    for i in range(5):
        book.score("line", f"s{i}", model, AlarmRule(), series(20, i), now=100.0 + i)
    assert len(book) == 3 and book.forgotten == 2  # the least recently seen went first
    assert book.streams[("line", "s4")].context.shape == (5, N)  # window - 1 readings, no more
    book.forget_idle(now=113.5)
    assert set(book.streams) == {("line", "s4")}
    book.score("line", "t", model, AlarmRule(), series(2, 0), timestamps=[5.0, 6.0])
    with pytest.raises(OutOfOrderError, match=r"stream 't': reading 1 has timestamp 6.0, not later"):
        book.score("line", "t", model, AlarmRule(), series(1, 0), timestamps=[6.0])
    with pytest.raises(DataError, match="stream 't' of line 'line' sent 6 values per reading before and 5"):
        book.score("line", "t", model, AlarmRule(), series(1, 0)[:, :5])


def test_a_window_head_pads_only_the_start_of_a_series() -> None:
    model = pca_model()
    values = series(30, 3)
    whole = model.predict(values).scores
    np.testing.assert_allclose(model.predict(values[10:], context=values[:10]).scores, whole[10:], rtol=1e-9)
    with pytest.raises(DataError, match="no readings"):
        model.predict(values[:0])
