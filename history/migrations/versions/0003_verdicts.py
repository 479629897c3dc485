"""verdicts: every operator's verdict with the API key it came with (an audit trail); the key on predictions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("labelled_key", sa.String(64)))
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(26), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(100)),
        sa.Column("key_id", sa.String(64)),
        sa.Column("key_name", sa.String(100)),
        sa.Column("note", sa.String(500)),
    )
    op.create_index("ix_verdicts_prediction_at", "verdicts", ["prediction_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_verdicts_prediction_at", "verdicts")
    op.drop_table("verdicts")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("labelled_key")
