"""The rows of the prediction history, typed: what the ingress records of an answer, and what a read
gives back (the same, with the operator's verdict). Their fields are the table's columns
(:mod:`lineguard.history.tables`; a test keeps the two in step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class PredictionRow:
    """One answer: which line and version gave it, when, and what it decided. Not frozen, but never changed
    once made: a frozen dataclass's ``__init__`` costs four times as much (an ``object.__setattr__`` per
    field), and the ingress makes one per reading, up to 10,000 for one request."""

    id: str  # time-ordered (lineguard.history.ids), returned with the answer
    line: str
    kind: str
    model_version: str
    ts: float  # UTC epoch seconds
    score: float  # the thresholded quantity (classifier lines: the defect confidence)
    threshold: float
    decision: str  # ok / ng, or the class a classifier answered
    is_anomaly: bool  # flagged: ng, or a defect class
    latency_ms: float
    sensor_id: str | None = None
    source: str | None = None  # the uploaded file's name
    confidence: float | None = None  # classifier lines: probability of the class answered
    severity: str | None = None
    digest: str | None = None  # BLAKE2b-128 of the uploaded bytes
    input_stat: float | None = None  # images: mean intensity; readings: RMS of the standardised values
    alarm: str | None = None  # sensor streams: "start" / "end" when this reading starts or ends the stream's alarm

    def params(self) -> dict[str, Any]:
        """The row as the insert statement takes it."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


@dataclass(slots=True)
class StoredPrediction(PredictionRow):
    """A recorded answer read back, with the operator's verdict on it (if any)."""

    label: str | None = None  # ok / ng, or a class
    labelled_at: float | None = None
    labelled_by: str | None = None
    label_note: str | None = None
    labelled_key: str | None = None  # the API key the verdict came with

    @classmethod
    def of(cls, row: Any) -> StoredPrediction:
        """From a database row (a mapping of column -> value)."""
        return cls(**{name: row[name] for name in ALL_FIELDS})


@dataclass(frozen=True, slots=True)
class VerdictEntry:
    """One verdict of the audit trail: what was said, when, by whom (as the client says) and with which key."""

    label: str
    at: float
    operator: str | None = None
    key_id: str | None = None
    key_name: str | None = None
    note: str | None = None


def escaped(text: str) -> str:
    """``text`` with its control characters written out (``\\x00``): NUL, which PostgreSQL's text refuses,
    and what a terminal or log viewer would act on."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


RECORD_FIELDS = tuple(f.name for f in fields(PredictionRow))
ALL_FIELDS = tuple(f.name for f in fields(StoredPrediction))


@dataclass(frozen=True)
class RowBatch:
    """Rows as columns (field -> one value per row): how they travel from the ingress to the Recorder. Ray
    pickles a few lists of numbers and strings many times faster than one object per row (1,000 sensor
    readings: 0.3 ms instead of 10)."""

    columns: dict[str, list[Any]]

    @classmethod
    def of(cls, rows: Sequence[PredictionRow]) -> RowBatch:
        return cls({name: [getattr(row, name) for row in rows] for name in RECORD_FIELDS})

    def __len__(self) -> int:
        return len(self.columns["id"])

    def part(self, start: int, stop: int) -> RowBatch:
        """Rows ``start:stop``."""
        return RowBatch({name: values[start:stop] for name, values in self.columns.items()})

    def params(self) -> list[dict[str, Any]]:
        """The rows as the insert statement takes them."""
        columns = [self.columns[name] for name in RECORD_FIELDS]
        return [dict(zip(RECORD_FIELDS, values, strict=True)) for values in zip(*columns, strict=True)]

    @property
    def lines(self) -> set[str]:
        return set(self.columns["line"])
