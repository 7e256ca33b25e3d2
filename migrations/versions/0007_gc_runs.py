"""gc runs condemn blobs in the catalog before deleting them from the store, so a publish that
saw a blob before a collection deleted it is refused instead of committing a version without it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 07:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_runs")),
    )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("condemned_by", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_blobs_condemned_by"), ["condemned_by"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_blobs_condemned_by_gc_runs"), "gc_runs", ["condemned_by"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_blobs_condemned_by_gc_runs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_blobs_condemned_by"))
        batch_op.drop_column("condemned_by")
    op.drop_table("gc_runs")
