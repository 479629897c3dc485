"""alarms: a sensor reading that starts or ends its stream's alarm says so

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("alarm", sa.String(8)))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("alarm")
