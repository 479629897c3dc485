"""rejected_rows: rows the database refused, set aside so that the rows behind them are written

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rejected_rows",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("rejected_at", sa.Float, nullable=False),
        sa.Column("line", sa.String(64)),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Column("row", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rejected_rows")
