"""The usage ledger: one row per answer, stored or not (the JSON API stores no messages).

What the daily budgets count and the page's totals show; written once when an answer ends.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .storage import metadata

# One row per answer, stored or not (the JSON API stores no messages): what budgets count.
usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("conversation_id", sa.Integer, index=True),
    sa.Column("model", sa.String(200)),
    sa.Column("tokens_in", sa.Integer, nullable=False, default=0),
    sa.Column("tokens_out", sa.Integer, nullable=False, default=0),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)


def record_usage(
    engine: Engine,
    owner: str | None,
    conversation_id: int | None,
    model: str,
    tokens_in: int,
    tokens_out: int,
    cost: float,
) -> None:
    with engine.begin() as db:
        db.execute(
            usage.insert().values(
                owner=owner,
                conversation_id=conversation_id,
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=cost,
                created_at=time.time(),
            )
        )


def tokens_used(engine: Engine, since: float, owner: str | None = None) -> int:
    """Tokens in and out since `since`, for one owner or the whole instance."""
    query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.tokens_in + usage.c.tokens_out), 0)).where(
        usage.c.created_at >= since
    )
    if owner is not None:
        query = query.where(usage.c.owner == owner)
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def usage_totals(engine: Engine, owner: str, conversation_id: int | None = None) -> dict:
    """Tokens and cost for an owner (all time) or one of their conversations, for the page."""
    query = sa.select(
        sa.func.coalesce(sa.func.sum(usage.c.tokens_in), 0).label("tokens_in"),
        sa.func.coalesce(sa.func.sum(usage.c.tokens_out), 0).label("tokens_out"),
        sa.func.coalesce(sa.func.sum(usage.c.cost), 0.0).label("cost"),
    ).where(usage.c.owner == owner)
    if conversation_id is not None:
        query = query.where(usage.c.conversation_id == conversation_id)
    with engine.connect() as db:
        row = db.execute(query).one()
    return {"tokens_in": int(row.tokens_in), "tokens_out": int(row.tokens_out), "cost": float(row.cost)}
