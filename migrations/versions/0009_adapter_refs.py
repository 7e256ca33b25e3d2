"""adapters.ref ("namespace/name"): search pages are ordered and keyset-paged by one indexed
column instead of sorting the adapters-namespaces join; equality filters get (column, ref)
indexes that read matches in page order; adapter_suffixes makes "name contains" an index range.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ref", sa.String(length=129), nullable=True))
    op.execute(
        """
        UPDATE adapters SET ref =
            (SELECT n.name FROM namespaces n WHERE n.id = adapters.namespace_id) || '/' || name
        """
    )
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.alter_column("ref", existing_type=sa.String(length=129), nullable=False)
        batch_op.create_index(batch_op.f("ix_adapters_ref"), ["ref"], unique=True)
        batch_op.drop_index(batch_op.f("ix_adapters_latest_base_model"))
        batch_op.drop_index(batch_op.f("ix_adapters_latest_r"))
        batch_op.create_index(
            "ix_adapters_latest_base_model_ref", ["latest_base_model", "ref"], unique=False
        )
        batch_op.create_index("ix_adapters_latest_r_ref", ["latest_r", "ref"], unique=False)
    op.create_table(
        "adapter_suffixes",
        sa.Column(
            "suffix",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapters.id"], name=op.f("fk_adapter_suffixes_adapter_id_adapters")
        ),
        sa.PrimaryKeyConstraint("suffix", "adapter_id", name=op.f("pk_adapter_suffixes")),
    )
    # Every suffix of 3 or more characters of every name (the service writes them from now on).
    op.execute(
        """
        WITH RECURSIVE s(adapter_id, rest) AS (
            SELECT id, CAST(name AS TEXT) FROM adapters WHERE length(name) >= 3
            UNION ALL
            SELECT adapter_id, substr(rest, 2) FROM s WHERE length(rest) > 3
        )
        INSERT INTO adapter_suffixes (suffix, adapter_id) SELECT rest, adapter_id FROM s
        """
    )


def downgrade() -> None:
    op.drop_table("adapter_suffixes")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_index("ix_adapters_latest_r_ref")
        batch_op.drop_index("ix_adapters_latest_base_model_ref")
        batch_op.create_index(batch_op.f("ix_adapters_latest_r"), ["latest_r"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_adapters_latest_base_model"), ["latest_base_model"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_adapters_ref"))
        batch_op.drop_column("ref")
