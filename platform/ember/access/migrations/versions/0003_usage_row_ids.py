"""Usage rows carry the id their replica gave them, so a re-delivered row is not counted twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("row_id", sa.String(32), nullable=True))
    # unique, but rows written before this revision have none (NULLs never collide)
    op.create_index("ix_usage_row_id", "usage", ["row_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_usage_row_id", "usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("row_id")
