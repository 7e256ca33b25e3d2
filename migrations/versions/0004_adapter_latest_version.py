"""Adapters point at their latest release, so search joins one version per adapter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 03:37:26.069761
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latest_version_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_adapters_latest_version_id"), ["latest_version_id"], unique=False
        )
    # Backfill: the highest non-yanked, non-prerelease version of each adapter.
    op.execute(
        """
        UPDATE adapters SET latest_version_id = (
            SELECT v.id FROM versions v
            WHERE v.adapter_id = adapters.id AND NOT v.yanked AND NOT v.prerelease
            ORDER BY v.major DESC, v.minor DESC, v.patch DESC
            LIMIT 1
        )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapters_latest_version_id"))
        batch_op.drop_column("latest_version_id")
