"""The history schema: one row per prediction, with the operator's feedback on it.

SQLAlchemy Core tables shared by the queries (``lineguard.history.db``) and the Alembic migrations
(``history/migrations``); a change here comes with a new migration. Times are UTC epoch seconds (a float
indexes and compares the same in SQLite and PostgreSQL); ids are time-ordered strings (``lineguard.history.ids``),
so "newest first" and cursor pagination are an index scan on the primary key.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("line", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("ts", Float, nullable=False, doc="when the answer was given, UTC epoch seconds"),
    Column("sensor_id", String(200)),
    Column("source", String(255), doc="the uploaded file's name, when there was one"),
    Column("score", Float, nullable=False, doc="the thresholded quantity (classifier lines: defect confidence)"),
    Column("threshold", Float, nullable=False),
    Column("decision", String(64), nullable=False, doc="ok / ng, or the class a classifier answered"),
    Column("is_anomaly", Boolean, nullable=False, doc="flagged: ng, or a defect class"),
    Column("confidence", Float, doc="classifier lines: probability of the class answered"),
    Column("severity", String(32)),
    Column("latency_ms", Float, nullable=False),
    Column("digest", String(32), doc="BLAKE2b-128 of the uploaded bytes"),
    Column("input_stat", Float, doc="images: mean intensity; sensor readings: RMS of the standardised values"),
    Column("alarm", String(8), doc='sensor streams: "start" or "end" when this reading starts or ends an alarm'),
    Column("label", String(64), doc="the operator's feedback: ok / ng, or a class"),
    Column("labelled_at", Float),
    Column("labelled_by", String(100)),
    Column("label_note", String(500)),
    Column("labelled_key", String(64), doc="the API key the verdict came with (none: an open service)"),
    Index("ix_predictions_line_id", "line", "id"),
    Index("ix_predictions_line_ts", "line", "ts"),
)

COLUMNS = tuple(c.name for c in predictions.columns)

# the dead letters: rows the database refused (a constraint, a value it cannot store), set aside so that the
# rows behind them are written; kept as JSON for an operator to inspect (README: Operations)
rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("id", String(26), primary_key=True, doc="the prediction's id"),
    Column("rejected_at", Float, nullable=False, doc="UTC epoch seconds"),
    Column("line", String(64)),
    Column("error", String(500), nullable=False, doc="what the database said"),
    Column("row", Text, nullable=False, doc="the row as JSON"),
)


# the audit trail of verdicts: every one given, with the key it came with; the prediction's label columns
# hold the latest, these rows all of them (an overwritten verdict stays here)
verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(26), nullable=False),
    Column("at", Float, nullable=False, doc="UTC epoch seconds"),
    Column("label", String(64), nullable=False),
    Column("operator", String(100), doc="who the client says gave it"),
    Column("key_id", String(64), doc="the API key it came with (none: an open service)"),
    Column("key_name", String(100)),
    Column("note", String(500)),
    Index("ix_verdicts_prediction_at", "prediction_id", "at"),
)
