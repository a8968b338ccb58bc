"""Pinned conversations: when one was pinned to the top of the list (None: not pinned).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A frozen copy of the column this revision adds: migrations never import the app's live tables.
PINNED_AT = sa.Column("pinned_at", sa.Float)


def upgrade() -> None:
    op.add_column("conversations", PINNED_AT._copy())  # nullable: SQLite adds it in place


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("pinned_at")
