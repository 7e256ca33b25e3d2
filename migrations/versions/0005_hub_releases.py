"""Versions remember where a releasing store (the Hub) put them: repo id and commit SHA.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 05:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hub_repo", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("hub_revision", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("hub_revision")
        batch_op.drop_column("hub_repo")
