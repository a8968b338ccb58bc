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


def _columns() -> list:
    """A frozen copy of the table of this revision: migrations never import the app's live tables."""
    return [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    ]


def upgrade() -> None:
    op.create_table("shared_links", *_columns())
    op.create_index("ix_shared_links_owner", "shared_links", ["owner"])
    op.create_index("ix_shared_links_conversation_id", "shared_links", ["conversation_id"])


def downgrade() -> None:
    op.drop_table("shared_links")
