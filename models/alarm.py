"""Alarms on a sensor stream: when a run of readings over the line's threshold becomes an alarm, and when
the alarm ends.

Flagging every reading whose score is over the threshold makes an alarm chatter: one noisy reading raises
it, the next clears it, and a fault that hovers at the threshold toggles it on every reading. Alarm
management practice (ANSI/ISA-18.2-2016, "Management of Alarm Systems for the Process Industries"; EEMUA
191, "Alarm Systems") removes the chatter with three standard devices, each one setting of
:class:`AlarmRule`:

- **k of n** (an on-delay that tolerates gaps; the "M-out-of-N" detector of radar practice): an alarm is
  raised only when at least ``k`` of the last ``n`` readings are over the threshold ``t``.
- **Deadband** (hysteresis): a raised alarm is held while readings stay over a lower clear level ``c``, so a
  fault hovering between ``c`` and ``t`` does not toggle it.
- **Minimum duration** (a latch): an alarm once raised lasts at least ``min_duration`` readings.

The exact rule, for the reading with index ``i`` in the stream (0, 1, 2, ... over the stream's life):

- ``over[i] = score[i] > t`` and ``held[i] = score[i] > c``, with ``c = rule.effective_clear(t)``
  (``min(clear_threshold, t)``; ``t`` without a clear threshold). ``c <= t``, so every over reading is a
  held one too. Both bits are recorded for every reading, active or not; readings before the stream's
  first count as neither.
- ``over_count[i]`` / ``held_count[i]``: how many of readings ``i - n + 1 .. i`` are over / held.
- **Start**: an inactive alarm starts at reading ``i`` when ``over_count[i] >= k``; reading ``i`` is the
  first reading of the alarm (its flag is True).
- **End**: an alarm active since reading ``s`` ends at reading ``i`` (``i > s``) when both
  ``i - s >= min_duration`` and ``held_count[i] < k``. Reading ``i`` is not part of the alarm (its flag is
  False); the alarm's duration is ``i - s``, the readings that were flagged. The same reading cannot start
  a new one (``over_count <= held_count < k``): at most one event per reading.

So with ``k = n = 1``, ``min_duration = 1`` and no clear threshold the flag is ``score > t`` exactly. The
threshold may change between readings (:func:`step` takes it per reading): each reading's bits are taken
against the threshold of its own time.

The state of a stream (:class:`AlarmState`) is two ``n``-bit windows (Python ints, bit 0 the newest
reading; at most ``n <= 10_000`` bits each), the readings seen and the start of the active alarm. It
serialises to JSON-safe values (the windows as hex strings, since JSON numbers lose bits past 2**53).
:func:`step` advances it by one reading; :func:`run` by a whole series at once, vectorised with NumPy,
with the same result.

Plain Python and NumPy: no serving, no storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from lineguard.errors import ConfigError, DataError

__all__ = ["MAX_WINDOW", "AlarmEvent", "AlarmRule", "AlarmState", "run", "step"]

MAX_WINDOW = 10_000  # the largest n: a stream's state stays a few kilobytes at most
STEPPED = 8  # run() steps series up to this long one reading at a time (the same answer, less overhead)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class AlarmRule:
    """When readings over the threshold become an alarm and when it ends (module docstring: the exact rule).

    k, n: an alarm starts when at least ``k`` of the last ``n`` readings are over the threshold.
    clear_threshold: the clear level ``c`` in score units (the deadband): an active alarm is held while at
    least ``k`` of the last ``n`` readings are over ``c``. None: ``c`` is the threshold itself. A value
    above the threshold acts as the threshold (:meth:`effective_clear`).
    min_duration: an alarm lasts at least this many readings.

    A rule is checked when it is made (:meth:`validate`), so an ``AlarmRule`` that exists is a valid one.
    """

    k: int = 1
    n: int = 1
    clear_threshold: float | None = None
    min_duration: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        for name in ("k", "n", "min_duration"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"alarm rule {name} must be an integer, got {getattr(self, name)!r}")
        if not 1 <= self.n <= MAX_WINDOW:
            raise ConfigError(f"alarm rule n (the window) must be in [1, {MAX_WINDOW}], got {self.n}")
        if not 1 <= self.k <= self.n:
            raise ConfigError(
                f"alarm rule k must be in [1, n] = [1, {self.n}] (k of the last n readings), got {self.k}"
            )
        if self.min_duration < 1:
            raise ConfigError(f"alarm rule min_duration must be at least 1 reading, got {self.min_duration}")
        clear = self.clear_threshold
        if clear is not None and (
            isinstance(clear, bool) or not isinstance(clear, int | float) or not math.isfinite(clear) or clear <= 0
        ):
            raise ConfigError(
                f"alarm rule clear_threshold must be a positive number in score units or null, got {clear!r}"
            )

    def effective_clear(self, threshold: float) -> float:
        """The clear level ``c`` for ``threshold``: ``min(clear_threshold, threshold)``, or the threshold."""
        if self.clear_threshold is None:
            return float(threshold)
        return float(min(self.clear_threshold, threshold))

    def to_dict(self) -> dict[str, Any]:
        """The rule for a JSON card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmRule:
        """The rule from :meth:`to_dict`'s form; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an alarm rule is a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(f"unknown alarm rule setting(s) {unknown}: the settings are {sorted(known)}")
        values = dict(data)
        if _is_int(values.get("clear_threshold")):  # JSON writes 2.0 as 2 in some encoders
            values["clear_threshold"] = float(values["clear_threshold"])
        return cls(**values)


@dataclass(frozen=True)
class AlarmEvent:
    """An alarm starting or ending at stream reading ``reading``.

    duration: the readings flagged in this alarm up to this event: 1 for a start (the reading that raised
    it), for an end the whole alarm's length (the ending reading itself is not flagged).
    """

    kind: Literal["start", "end"]
    reading: int
    duration: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AlarmState:
    """One stream's alarm state: bounded (two windows of at most ``n`` bits) and JSON-safe (:meth:`to_dict`).

    over, held: the last ``n`` readings' bits (bit 0 the newest) of ``score > t`` and ``score > c``.
    seen: readings seen so far; the next reading's index.
    started_at: the index of the reading that started the active alarm; None when no alarm is active.

    A state belongs to one rule; stepped with a rule of another ``n`` it keeps the last ``n`` bits it has.
    """

    over: int = 0
    held: int = 0
    seen: int = 0
    started_at: int | None = None

    @property
    def active(self) -> bool:
        """Whether an alarm is active after the last reading."""
        return self.started_at is not None

    @property
    def since(self) -> int:
        """Readings in the active alarm so far (the one that started it included); 0 when none is active."""
        return 0 if self.started_at is None else self.seen - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the windows as hex strings; ``active`` and ``since`` (derived) for readers."""
        return {
            "over": format(self.over, "x"),
            "held": format(self.held, "x"),
            "seen": self.seen,
            "started_at": self.started_at,
            "active": self.active,
            "since": self.since,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmState:
        """The state from :meth:`to_dict`'s form, checked: :class:`DataError` names what does not fit."""
        if not isinstance(data, Mapping):
            raise DataError(f"an alarm state is a mapping, got {type(data).__name__}")
        known = {"over", "held", "seen", "started_at", "active", "since"}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise DataError(f"unknown alarm state field(s) {unknown}: the fields are {sorted(known)}")
        seen, started_at = data.get("seen", 0), data.get("started_at")
        if not _is_int(seen) or seen < 0:
            raise DataError(f"alarm state seen must be a non-negative integer, got {seen!r}")
        if started_at is not None and (not _is_int(started_at) or not 0 <= started_at < seen):
            raise DataError(f"alarm state started_at must be null or a reading in [0, {seen}), got {started_at!r}")
        state = cls(
            over=_window(data.get("over", "0"), "over", seen),
            held=_window(data.get("held", "0"), "held", seen),
            seen=int(seen),
            started_at=None if started_at is None else int(started_at),
        )
        if state.over & ~state.held:
            raise DataError("alarm state: a reading over the threshold must be over the clear level too")
        for name in ("active", "since"):
            if name in data and data[name] != getattr(state, name):
                raise DataError(
                    f"alarm state {name} is {data[name]!r}, but seen and started_at make it {getattr(state, name)!r}"
                )
        return state


def _window(text: Any, name: str, seen: int) -> int:
    if not isinstance(text, str):
        raise DataError(f"alarm state {name} must be a hex string, got {text!r}")
    try:
        bits = int(text, 16)
    except ValueError:
        raise DataError(f"alarm state {name} must be a hex string, got {text!r}") from None
    if bits < 0 or bits.bit_length() > min(MAX_WINDOW, seen):
        raise DataError(f"alarm state {name} holds more readings than were seen ({seen}) or than a window allows")
    return bits


def _threshold(threshold: float) -> float:
    value = float(threshold)
    if not math.isfinite(value):
        raise ConfigError(f"the alarm threshold must be a finite number, got {threshold!r}")
    return value


def step(rule: AlarmRule, state: AlarmState, score: float, threshold: float) -> AlarmEvent | None:
    """Advance ``state`` (in place) by one reading's ``score`` against ``threshold``; the alarm that starts
    or ends at this reading, if any. The reading's flag is ``state.active`` afterwards."""
    t = _threshold(threshold)
    c = rule.effective_clear(t)
    value = float(score)
    if not math.isfinite(value):
        raise DataError(f"the score of reading {state.seen} is {value}: scores must be finite")
    window = (1 << rule.n) - 1
    state.over = ((state.over << 1) | (value > t)) & window
    state.held = ((state.held << 1) | (value > c)) & window
    reading = state.seen
    state.seen += 1
    if state.started_at is None:
        if state.over.bit_count() >= rule.k:
            state.started_at = reading
            return AlarmEvent("start", reading, 1)
        return None
    duration = reading - state.started_at
    if duration >= rule.min_duration and state.held.bit_count() < rule.k:
        state.started_at = None
        return AlarmEvent("end", reading, duration)
    return None


def run(
    rule: AlarmRule, scores: np.ndarray, threshold: float, state: AlarmState | None = None
) -> tuple[np.ndarray, list[AlarmEvent], AlarmState]:
    """:func:`step` over a whole series, vectorised (up to ``STEPPED`` readings, stepped): the flags (True
    while an alarm is active at a reading), the events, and the state after the last reading (a new object;
    ``state`` is left as it was).

    Continuing from the returned state is the same as running the two series joined.
    """
    t = _threshold(threshold)
    c = rule.effective_clear(t)
    start = AlarmState() if state is None else replace(state)
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"alarm scores must be one series (1-D), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise DataError(f"the score of reading {start.seen + int(bad[0])} is {x[bad[0]]}: scores must be finite")
    m, n, seen = x.size, rule.n, start.seen
    if m <= STEPPED:  # a streamed request's few readings: a loop of step() costs a fortieth of the arrays below
        flags = np.zeros(m, dtype=bool)
        events: list[AlarmEvent] = []
        for i, score in enumerate(x.tolist()):
            event = step(rule, start, score, t)
            if event is not None:
                events.append(event)
            flags[i] = start.active
        return flags, events, start
    # the window's earlier readings (n - 1 of them, oldest first) followed by this series
    over = np.concatenate([_bits(start.over, n - 1), x > t])
    held = np.concatenate([_bits(start.held, n - 1), x > c])
    rises = np.flatnonzero(_window_counts(over, n) >= rule.k)
    falls = np.flatnonzero(_window_counts(held, n) < rule.k)
    flags = np.zeros(m, dtype=bool)
    events = []
    started, i = start.started_at, 0  # started: a stream index; i: the next series position to decide
    while i < m:
        if started is None:
            j = int(np.searchsorted(rises, i))
            if j == rises.size:
                break
            i = int(rises[j])
            started = seen + i
            events.append(AlarmEvent("start", started, 1))
        earliest = max(i, started - seen + rule.min_duration)
        j = int(np.searchsorted(falls, earliest))
        end = int(falls[j]) if j < falls.size else m
        flags[i:end] = True
        if end == m:
            break
        events.append(AlarmEvent("end", seen + end, seen + end - started))
        started, i = None, end + 1
    final = AlarmState(over=_mask(over[-n:]), held=_mask(held[-n:]), seen=seen + m, started_at=started)
    return flags, events, final


def _window_counts(bits: np.ndarray, n: int) -> np.ndarray:
    """For ``n - 1`` earlier bits followed by a series: the count of set bits in the last ``n`` at each
    reading of the series."""
    total = np.concatenate([[0], np.cumsum(bits, dtype=np.int64)])
    counts: np.ndarray = total[n:] - total[:-n]
    return counts


def _bits(mask: int, width: int) -> np.ndarray:
    """The low ``width`` bits of ``mask`` as a bool array, oldest (highest bit) first."""
    if width == 0:
        return np.zeros(0, dtype=bool)
    low = mask & ((1 << width) - 1)
    raw = np.frombuffer(low.to_bytes((width + 7) // 8, "big"), dtype=np.uint8)
    return np.unpackbits(raw)[-width:].astype(bool)


def _mask(bits: np.ndarray) -> int:
    """A bool array, oldest first, as an int with the last element as bit 0."""
    padded = np.concatenate([np.zeros((-bits.size) % 8, dtype=bool), bits])
    return int.from_bytes(np.packbits(padded).tobytes(), "big")
