"""The schema as it was when migrations began: conversations, messages, usage.

It also adopts a database made before migrations existed (by `metadata.create_all`, possibly by an
older version with fewer columns): missing tables and indexes are created, missing columns added.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A frozen copy of the tables of this revision: migrations never import the app's live tables.
metadata = sa.MetaData()

sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200)),
    sa.Column("system_prompt", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("model", sa.String(200)),
    sa.Column("tokens_in", sa.Integer),
    sa.Column("tokens_out", sa.Integer),
    sa.Column("ttft_ms", sa.Integer),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("watched_at", sa.Float),
    sa.Column("stop_requested", sa.Boolean, nullable=False),
    sa.Column("reply_to", sa.Integer),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("cost", sa.Float),
)

sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("conversation_id", sa.Integer, index=True),
    sa.Column("model", sa.String(200)),
    sa.Column("tokens_in", sa.Integer, nullable=False),
    sa.Column("tokens_out", sa.Integer, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)

# What a column added to an existing table holds in its existing rows (NOT NULL needs one); the
# server default stays on such a column, harmlessly.
_BACKFILL = {
    "title": "New chat",
    "content": "",
    "status": "done",
    "stop_requested": sa.false(),
    "active": sa.true(),
    "tokens_in": "0",
    "tokens_out": "0",
    "cost": "0",
    "created_at": "0",
    "updated_at": "0",
    "role": "assistant",
}


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {column["name"] for column in sa.inspect(bind).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            copy = column._copy()
            copy.foreign_keys.clear()
            copy.constraints.clear()
            if not column.nullable:
                copy.server_default = sa.DefaultClause(_BACKFILL.get(column.name, "0"))
            op.add_column(table.name, copy)  # SQLite can add a column in place, with its default
    metadata.create_all(bind, checkfirst=True)  # missing tables, and missing indexes of existing ones
    for table in metadata.sorted_tables:
        if table.name in existing:
            present = {index["name"] for index in sa.inspect(bind).get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in present:
                    index.create(bind)


def downgrade() -> None:
    for table in reversed(metadata.sorted_tables):
        op.drop_table(table.name)
