"""A thinking model's thought beside its answer, how long it thought, and a reasoning effort per conversation.

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

# A frozen copy of the columns this revision adds: migrations never import the app's live tables.
COLUMNS = {
    "messages": (
        sa.Column("thoughts", sa.Text),  # the thought, apart from `content`: search and history never see it
        sa.Column("thought_ms", sa.Integer),
    ),
    "conversations": (sa.Column("reasoning_effort", sa.String(16)),),
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.add_column(table, column._copy())  # nullable: SQLite adds it in place


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
