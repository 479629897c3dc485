"""Alarm logic on sensor streams: the exact k-of-n, deadband and minimum-duration rule, and that the
vectorised series run, reading-by-reading steps and a run continued from a saved state all agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lineguard.errors import ConfigError, DataError
from lineguard.models.alarm import MAX_WINDOW, AlarmEvent, AlarmRule, AlarmState, run, step


def _stepped(
    rule: AlarmRule, scores: np.ndarray, threshold: float, state: AlarmState | None = None
) -> tuple[np.ndarray, list[AlarmEvent], AlarmState]:
    state = AlarmState() if state is None else state
    flags, events = [], []
    for score in scores:
        event = step(rule, state, float(score), threshold)
        if event is not None:
            events.append(event)
        flags.append(state.active)
    return np.array(flags, dtype=bool), events, state


def _flags(rule: AlarmRule, scores: list[float], threshold: float = 1.0) -> list[bool]:
    flags, _, _ = run(rule, np.array(scores), threshold)
    return [bool(f) for f in flags]


def _random_rule(rng: np.random.Generator) -> AlarmRule:
    n = int(rng.integers(1, 9))
    clear = None if rng.random() < 0.3 else float(rng.uniform(0.2, 1.4))  # above 1.0 acts as the threshold
    return AlarmRule(k=int(rng.integers(1, n + 1)), n=n, clear_threshold=clear, min_duration=int(rng.integers(1, 6)))


def _random_series(rng: np.random.Generator, size: int) -> np.ndarray:
    """Scores around a threshold of 1.0, in runs, so that alarms start, hold and end."""
    level = np.repeat(rng.choice([0.3, 0.8, 1.3], size=size // 4 + 1), 4)[:size]
    return np.abs(level + rng.normal(0, 0.3, size))


def test_the_default_rule_flags_exactly_the_scores_over_the_threshold() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 0.5, 500)
    scores[::50] = 1.0  # at the threshold is not over it
    flags, events, state = run(AlarmRule(), scores, 1.0)
    over = scores > 1.0
    assert (flags == over).all()
    rises = np.flatnonzero(over & ~np.r_[False, over[:-1]])
    falls = np.flatnonzero(~over & np.r_[False, over[:-1]])
    assert [e.reading for e in events if e.kind == "start"] == rises.tolist()
    assert [e.reading for e in events if e.kind == "end"] == falls.tolist()
    assert all(e.duration == 1 for e in events if e.kind == "start")
    assert state.seen == 500 and state.active == bool(over[-1])


def test_k_of_n_starts_on_the_reading_that_makes_the_kth_over_in_the_window() -> None:
    rule = AlarmRule(k=3, n=5)
    # over:  1    1    0    1    0    1    0    0    0    1
    scores = [2.0, 2.0, 0.5, 2.0, 0.5, 2.0, 0.5, 0.5, 0.5, 2.0]
    flags, events, _ = run(rule, np.array(scores), 1.0)
    # readings 0..3 hold the third over -> start at 3; 1..5 still hold three; 2..6 hold two -> end at 6
    assert flags.tolist() == [False, False, False, True, True, True, False, False, False, False]
    assert events == [AlarmEvent("start", 3, 1), AlarmEvent("end", 6, 3)]
    # a lone over reading, or two in any window of five, never start one
    assert not any(_flags(rule, [2.0, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5, 2.0]))


def test_the_deadband_holds_an_alarm_through_readings_between_the_clear_level_and_the_threshold() -> None:
    scores = [0.2, 1.2, 0.8, 0.7, 0.4, 0.8, 1.1, 0.6, 0.3]
    assert _flags(AlarmRule(), scores) == [False, True, False, False, False, False, True, False, False]
    held = AlarmRule(clear_threshold=0.5)
    # held through 0.8 and 0.7 (over 0.5), ended by 0.4; 0.8 alone does not start one (not over 1.0)
    assert _flags(held, scores) == [False, True, True, True, False, False, True, True, False]
    _, events, _ = run(held, np.array(scores), 1.0)
    assert [(e.kind, e.reading, e.duration) for e in events] == [
        ("start", 1, 1),
        ("end", 4, 3),
        ("start", 6, 1),
        ("end", 8, 2),
    ]
    # a clear threshold above the threshold acts as the threshold itself
    assert _flags(AlarmRule(clear_threshold=5.0), scores) == _flags(AlarmRule(), scores)
    assert AlarmRule(clear_threshold=5.0).effective_clear(1.0) == 1.0
    assert AlarmRule(clear_threshold=0.5).effective_clear(1.0) == 0.5
    assert AlarmRule().effective_clear(1.0) == 1.0


def test_the_deadband_counts_k_of_n_over_the_clear_level() -> None:
    rule = AlarmRule(k=2, n=3, clear_threshold=0.5)
    # two over 1.0 start it; then two of the last three over 0.5 hold it; 0.7, 0.2, 0.3 end it
    scores = [1.5, 1.5, 0.7, 0.2, 0.7, 0.7, 0.2, 0.3]
    assert _flags(rule, scores) == [False, True, True, True, True, True, True, False]


def test_min_duration_holds_an_alarm_and_no_longer_than_needed() -> None:
    rule = AlarmRule(min_duration=4)
    scores = [0.5, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert _flags(rule, scores) == [False, True, True, True, True, False, False]
    _, events, _ = run(rule, np.array(scores), 1.0)
    assert events == [AlarmEvent("start", 1, 1), AlarmEvent("end", 5, 4)]
    # an alarm that outlasts min_duration ends at its first reading not over the (clear) threshold
    longer = [0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.5, 0.5]
    assert _flags(rule, longer) == [False, True, True, True, True, True, True, False, False]
    # readings over the threshold inside the held span do not restart or extend it past them
    again = [2.0, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5]
    assert _flags(rule, again) == [True, True, True, True, False, False, False]


def test_run_equals_stepping_reading_by_reading() -> None:
    rng = np.random.default_rng(1)
    for _ in range(150):
        rule = _random_rule(rng)
        scores = _random_series(rng, int(rng.integers(0, 120)))
        flags, events, state = run(rule, scores, 1.0)
        stepped_flags, stepped_events, stepped_state = _stepped(rule, scores, 1.0)
        assert (flags == stepped_flags).all(), rule
        assert events == stepped_events, rule
        assert state == stepped_state, rule


def test_a_run_continued_from_its_state_equals_the_joined_series() -> None:
    rng = np.random.default_rng(2)
    for _ in range(150):
        rule = _random_rule(rng)
        scores = _random_series(rng, 150)
        cuts = sorted(rng.integers(0, 151, size=int(rng.integers(1, 4))).tolist())
        whole_flags, whole_events, whole_state = run(rule, scores, 1.0)
        state: AlarmState | None = None
        parts_flags, parts_events = [], []
        for piece in np.split(scores, cuts):
            before = None if state is None else AlarmState.from_dict(json.loads(json.dumps(state.to_dict())))
            flags, events, state = run(rule, piece, 1.0, before)
            parts_flags.append(flags)
            parts_events.extend(events)
        assert (np.concatenate(parts_flags) == whole_flags).all(), (rule, cuts)
        assert parts_events == whole_events and state == whole_state, (rule, cuts)
        # and stepping on from a state made by run agrees too
        half_flags, _, half_state = run(rule, scores[:75], 1.0)
        rest_flags, _, rest_state = _stepped(rule, scores[75:], 1.0, half_state)
        assert (np.concatenate([half_flags, rest_flags]) == whole_flags).all() and rest_state == whole_state


def test_run_leaves_the_given_state_as_it_was() -> None:
    state = AlarmState()
    run(AlarmRule(), np.array([2.0, 2.0]), 1.0, state)
    assert state == AlarmState()
    flags, events, same = run(AlarmRule(), np.array([]), 1.0, state)
    assert flags.shape == (0,) and events == [] and same == state


def test_the_state_is_bounded_and_json_safe() -> None:
    rule = AlarmRule(k=5_000, n=MAX_WINDOW, clear_threshold=0.5)
    scores = np.random.default_rng(3).uniform(0, 2, 30_000)
    flags, _, state = run(rule, scores, 1.0)
    assert state.over.bit_length() <= MAX_WINDOW and state.held.bit_length() <= MAX_WINDOW
    assert state.over == int("".join("1" if s > 1.0 else "0" for s in scores[-MAX_WINDOW:]), 2)
    text = json.dumps(state.to_dict(), allow_nan=False)
    assert len(text) < 6_000
    back = AlarmState.from_dict(json.loads(text))
    assert back == state and back.active == state.active and back.since == state.since
    assert state.active == bool(flags[-1])


def test_state_fields() -> None:
    state = AlarmState()
    assert not state.active and state.since == 0
    rule = AlarmRule(n=2, min_duration=3)
    step(rule, state, 2.0, 1.0)
    step(rule, state, 0.0, 1.0)
    assert state.active and state.started_at == 0 and state.since == 2 and state.seen == 2
    assert state.to_dict() == {"over": "2", "held": "2", "seen": 2, "started_at": 0, "active": True, "since": 2}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seen": 2, "extra": 1}, r"unknown alarm state field\(s\) \['extra'\]"),
        ({"seen": -1}, "seen must be a non-negative integer"),
        ({"seen": 2, "started_at": 2}, "started_at must be null or a reading in"),
        ({"seen": 2, "over": "zz"}, "over must be a hex string"),
        ({"seen": 2, "over": 3}, "over must be a hex string"),
        ({"seen": 2, "over": "7", "held": "7"}, "more readings than were seen"),
        ({"seen": 2, "over": "1", "held": "0"}, "over the clear level too"),
        ({"seen": 2, "started_at": 1, "active": False}, "active is False"),
    ],
)
def test_a_bad_state_is_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        AlarmState.from_dict(data)


def test_the_rule_card_round_trips_and_refuses_unknown_keys() -> None:
    rule = AlarmRule(k=2, n=4, clear_threshold=0.8, min_duration=3)
    card = json.loads(json.dumps(rule.to_dict()))
    assert card == {"k": 2, "n": 4, "clear_threshold": 0.8, "min_duration": 3}
    assert AlarmRule.from_dict(card) == rule
    assert AlarmRule.from_dict({}) == AlarmRule()
    assert AlarmRule.from_dict({"clear_threshold": 2}).clear_threshold == 2.0
    with pytest.raises(ConfigError, match=r"unknown alarm rule setting\(s\) \['m', 'window'\]"):
        AlarmRule.from_dict({"k": 1, "window": 3, "m": 2})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"k": 0}, "k must be in"),
        ({"k": 3, "n": 2}, r"k must be in \[1, n\] = \[1, 2\]"),
        ({"n": 0}, "n .* must be in"),
        ({"n": MAX_WINDOW + 1, "k": 1}, "10000"),
        ({"min_duration": 0}, "min_duration must be at least 1"),
        ({"clear_threshold": 0.0}, "clear_threshold must be a positive number"),
        ({"clear_threshold": -1.0}, "clear_threshold must be a positive number"),
        ({"clear_threshold": float("nan")}, "clear_threshold must be a positive number"),
        ({"clear_threshold": "0.5"}, "clear_threshold must be a positive number"),
        ({"k": 1.5}, "k must be an integer"),
        ({"n": True}, "n must be an integer"),
    ],
)
def test_a_bad_rule_is_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AlarmRule(**settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        AlarmRule.from_dict(settings)


def test_bad_scores_and_thresholds_are_refused() -> None:
    with pytest.raises(DataError, match="reading 2 is nan"):
        run(AlarmRule(), np.array([0.0, 1.0, np.nan]), 1.0)
    with pytest.raises(DataError, match="reading 0 is inf"):
        step(AlarmRule(), AlarmState(), float("inf"), 1.0)
    with pytest.raises(DataError, match="1-D"):
        run(AlarmRule(), np.zeros((2, 2)), 1.0)
    with pytest.raises(ConfigError, match="finite"):
        run(AlarmRule(), np.zeros(3), float("nan"))
    with pytest.raises(ConfigError, match="finite"):
        step(AlarmRule(), AlarmState(), 0.0, float("inf"))
