"""Adapters keep what search filters on from their latest release (base model, rank and, in
adapter_targets, target modules): filters read one row per adapter, not per version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 05:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latest_base_model", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("latest_r", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_adapters_latest_base_model"), ["latest_base_model"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_adapters_latest_r"), ["latest_r"], unique=False)
    op.execute(
        """
        UPDATE adapters SET
            latest_base_model = (SELECT v.base_model FROM versions v
                                 WHERE v.id = adapters.latest_version_id),
            latest_r = (SELECT v.r FROM versions v WHERE v.id = adapters.latest_version_id)
        """
    )
    op.create_table(
        "adapter_targets",
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("module", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapters.id"], name=op.f("fk_adapter_targets_adapter_id_adapters")
        ),
        sa.PrimaryKeyConstraint("adapter_id", "module", name=op.f("pk_adapter_targets")),
    )
    op.create_index(op.f("ix_adapter_targets_module"), "adapter_targets", ["module"], unique=False)
    # Backfill from each adapter's latest release (kept since 0004).
    op.execute(
        """
        INSERT INTO adapter_targets (adapter_id, module)
        SELECT a.id, vt.module FROM adapters a
        JOIN version_targets vt ON vt.version_id = a.latest_version_id
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_adapter_targets_module"), table_name="adapter_targets")
    op.drop_table("adapter_targets")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapters_latest_r"))
        batch_op.drop_index(batch_op.f("ix_adapters_latest_base_model"))
        batch_op.drop_column("latest_r")
        batch_op.drop_column("latest_base_model")
