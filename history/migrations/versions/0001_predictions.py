"""predictions: one row per answer, with the operator's feedback

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("line", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("sensor_id", sa.String(200)),
        sa.Column("source", sa.String(255)),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("decision", sa.String(64), nullable=False),
        sa.Column("is_anomaly", sa.Boolean, nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("severity", sa.String(32)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("digest", sa.String(32)),
        sa.Column("input_stat", sa.Float),
        sa.Column("label", sa.String(64)),
        sa.Column("labelled_at", sa.Float),
        sa.Column("labelled_by", sa.String(100)),
        sa.Column("label_note", sa.String(500)),
    )
    op.create_index("ix_predictions_line_id", "predictions", ["line", "id"])
    op.create_index("ix_predictions_line_ts", "predictions", ["line", "ts"])


def downgrade() -> None:
    op.drop_index("ix_predictions_line_ts", "predictions")
    op.drop_index("ix_predictions_line_id", "predictions")
    op.drop_table("predictions")
