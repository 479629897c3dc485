"""The state a sensor line keeps per stream (a machine, a ``sensor_id``): its last readings, for the window
heads, and its alarm.

Each stream keeps its last ``window - 1`` readings (``window`` of the line's current head; a per-reading
head keeps none) and its :class:`lineguard.models.alarm.AlarmState`. A new reading is scored in the window
its earlier readings make, so a stream scored one reading at a time answers exactly what its whole series
scored at once answers (:meth:`lineguard.models.sensor_model.SensorModel.predict` with the context; a new
stream starts as a series starts, its first reading standing in for the readings before it).

Memory is bounded: a stream costs its ``(window - 1, n)`` float64 readings, two ``n``-bit alarm windows and a
few numbers; streams silent for ``idle_s`` are forgotten, and beyond ``max_streams`` the least recently
seen goes first. Readings carry an optional timestamp; a stream's readings must arrive in time order, and
one older than (or as old as) the stream's last is refused with both timestamps rather than scored out of
place (the window would be wrong, and the alarm's count too).

Plain NumPy and Python: the deployment that owns a shard of streams (:mod:`lineguard.deployments.streams`)
adds the model cache and the Serve plumbing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from lineguard.errors import DataError
from lineguard.models.alarm import AlarmEvent, AlarmRule, AlarmState, run
from lineguard.models.sensor_model import SensorModel, SensorScores


@dataclass
class StreamState:
    context: np.ndarray  # (<= window - 1, n) float64: the stream's last readings
    alarm: AlarmState = field(default_factory=AlarmState)
    last_timestamp: float | None = None
    last_seen: float = 0.0  # time.monotonic() of its last reading

    def nbytes(self) -> int:
        """What the stream costs: its readings, its alarm windows and the object overheads, roughly."""
        return int(self.context.nbytes) + 2 * (len(f"{self.alarm.over:x}") + 8) + 200


@dataclass
class StreamAnswer:
    """``out``: the readings' scores; ``alarm`` ``(B,)``: whether the stream is in alarm at each reading;
    ``events``: the alarm starting or ending (``reading`` counted over the stream's life); ``state``: the
    stream's alarm after these readings."""

    out: SensorScores
    alarm: np.ndarray
    events: list[AlarmEvent]
    state: AlarmState


class OutOfOrderError(DataError):
    """A stream's reading older than the last one it sent."""


class StreamBook:
    """Args:
    idle_s: a stream silent this long is forgotten (its window and alarm start afresh).
    max_streams: the most streams kept; beyond, the least recently seen is forgotten.
    """

    def __init__(self, idle_s: float = 900.0, max_streams: int = 100_000) -> None:
        self.idle_s, self.max_streams = idle_s, max_streams
        self.streams: OrderedDict[tuple[str, str], StreamState] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self.streams)

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.streams.values())

    def forget_idle(self, now: float | None = None) -> int:
        """Forget streams silent for ``idle_s``; the least recently seen come first, so this stops early."""
        now = time.monotonic() if now is None else now
        gone = 0
        while self.streams:
            key, state = next(iter(self.streams.items()))
            if now - state.last_seen < self.idle_s:
                break
            del self.streams[key]
            gone += 1
        self.forgotten += gone
        return gone

    def score(
        self,
        line: str,
        stream: str | None,
        model: SensorModel,
        rule: AlarmRule,
        values: np.ndarray,
        timestamps: list[float] | None = None,
        now: float | None = None,
    ) -> StreamAnswer:
        """Score ``values`` ``(B, n)`` (in time order) of ``stream`` on ``line`` and advance its state (``stream``
        None: the readings are a series of their own, and no state is kept)."""
        if stream is None:  # a batch of its own: scored in its windows, its alarm counted over it alone
            out = model.predict(values)
            flags, events, alarm = run(rule, out.scores, model.threshold.value)
            return StreamAnswer(out, flags, events, alarm)
        now = time.monotonic() if now is None else now
        self.forget_idle(now)
        key = (line, stream)
        state = self.streams.get(key)
        if state is not None and state.context.shape[1] != values.shape[1]:
            if values.shape[1] == model.n_features:  # the line's new version reads other features: start afresh
                state = None
            else:
                raise DataError(  # a 422: the request is wrong, not the model
                    f"stream {stream!r} of line {line!r} sent {state.context.shape[1]} values per reading before and "
                    f"{values.shape[1]} now: a stream keeps its features (the line reads {model.n_features})"
                )
        if timestamps is not None:
            _check_order(stream, timestamps, None if state is None else state.last_timestamp)
        context = None if state is None or len(state.context) == 0 else state.context
        out = model.predict(values, context=context)
        flags, events, alarm = run(rule, out.scores, model.threshold.value, None if state is None else state.alarm)
        keep = model.window - 1
        series = values if context is None else np.concatenate([context, values])
        state = StreamState(
            context=np.array(series[max(0, len(series) - keep) :] if keep else series[:0], dtype=np.float64),
            alarm=alarm,
            last_timestamp=timestamps[-1] if timestamps else (None if state is None else state.last_timestamp),
            last_seen=now,
        )
        self.streams[key] = state
        self.streams.move_to_end(key)
        while len(self.streams) > self.max_streams:
            self.streams.popitem(last=False)
            self.forgotten += 1
        return StreamAnswer(out, flags, events, alarm)


def _check_order(stream: str, timestamps: list[float], last: float | None) -> None:
    previous = last
    for i, stamp in enumerate(timestamps):
        if previous is not None and not stamp > previous:
            where = "the stream's last reading" if i == 0 else f"reading {i}"
            raise OutOfOrderError(
                f"stream {stream!r}: reading {i + 1} has timestamp {stamp}, not later than {where} ({previous}); "
                "a stream's readings must arrive in time order (send them oldest first, each once)"
            )
        previous = stamp
