"""Shared links: an unguessable token and a frozen snapshot of one conversation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A frozen copy of the table of this revision: migrations never import the app's live tables.
metadata = sa.MetaData()

shared_links = sa.Table(
    "shared_links",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("conversation_id", sa.Integer, nullable=False, index=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def upgrade() -> None:
    shared_links.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    op.drop_table("shared_links")
