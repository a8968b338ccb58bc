"""Share links: a read-only page of a conversation as it was when shared, for anyone with the link.

The link's id is a random token, not the conversation's id. The shared page is server-rendered with
the same `_message.html` as the chat, without the composer, the sidebar or anything of the owner's,
and asks search engines not to index it. Every view reads the link from the database (no cache), so
a revoked link is a 404 at once on every worker and instance. SHARING=off hides the control and
makes every link a 404; SHARED_LINKS_PUBLIC decides whether APP_PASSWORD's login guards it too.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from . import sharing_store, storage
from .message_views import message_view
from .security import SHARED_PAGE, current_owner

bp = Blueprint("sharing", __name__)


def trickle():
    return current_app.extensions["trickle"]


def _sharing_on() -> None:
    if not trickle().settings.sharing:
        abort(404, "Sharing is turned off on this server.")


def _owned_conversation(conversation_id: int):
    row = storage.get_conversation(trickle().engine, conversation_id, current_owner())
    if row is None:
        abort(404, "This conversation does not exist (it may have been deleted).")
    return row


def _share_widget(conversation_id: int):
    """The Share control of one conversation, with its links (the fragment htmx swaps)."""
    conversation = storage.get_conversation(trickle().engine, conversation_id)
    return render_template("_share.html", conversation=conversation)


@bp.app_context_processor
def sharing_context() -> dict:
    """What `_share.html` and the sidebar's list of links need, wherever they are included."""

    def shared_links_of(conversation_id: int | None = None) -> list[dict]:
        """The owner's links to one conversation, or to all of them."""
        owner = g.get("owner")
        rows = sharing_store.list_shares(trickle().engine, owner, conversation_id) if owner else []
        return [
            {
                "token": row.token,
                "url": url_for(SHARED_PAGE, token=row.token, _external=True),
                "shared": _when(row.created_at),
                "title": row.title,
                "conversation_id": row.conversation_id,
            }
            for row in rows
        ]

    return {"sharing_on": trickle().settings.sharing, "shared_links_of": shared_links_of}


@bp.post("/c/<int:conversation_id>/share")
def share(conversation_id: int):
    """A new link to the conversation as it is now; later messages need a new share."""
    _sharing_on()
    conversation = _owned_conversation(conversation_id)
    sharing_store.create_share(trickle().engine, current_owner(), conversation)
    if not request.headers.get("HX-Request"):
        return redirect(url_for("pages.conversation", conversation_id=conversation_id, _anchor="share"), 303)
    return _share_widget(conversation_id)


@bp.post("/s/<token>/revoke")
def revoke(token: str):
    """Revoke one of the owner's links: from now on it is a 404."""
    _sharing_on()
    conversation_id = sharing_store.revoke_share(trickle().engine, current_owner(), token)
    if conversation_id is None:
        abort(404, "There is no such shared link.")
    if not request.headers.get("HX-Request"):
        return redirect(url_for("pages.conversation", conversation_id=conversation_id, _anchor="share"), 303)
    return _share_widget(conversation_id)


@bp.get("/s/<token>")
def shared_conversation(token: str):
    """The snapshot behind a link, read-only (security.SHARED_PAGE: open when SHARED_LINKS_PUBLIC)."""
    g.session_untouchable = True  # a visitor gets no cookie from looking at a shared page
    _sharing_on()
    snapshot = sharing_store.shared_snapshot(trickle().engine, token) if len(token) <= 64 else None
    if snapshot is None:
        abort(404, "This shared link does not exist, or its owner revoked it.")
    views = [_read_only_view(position, message) for position, message in enumerate(snapshot["messages"], start=1)]
    html = render_template("shared.html", title=snapshot["title"], shared=_when(snapshot["shared_at"]), messages=views)
    return (
        html,
        200,
        {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _read_only_view(position: int, message: dict) -> dict:
    """A snapshot message as `_message.html` shows it, numbered by its place (no stored id leaks)."""
    fields = {name: message.get(name) for name in sharing_store.SNAPSHOT_FIELDS}
    # A snapshot holds no thought and no file (yet: share-time choices for later), and no error text.
    row = SimpleNamespace(id=position, reply_to=None, error=None, thoughts=None, thought_ms=None, **fields)
    added = [(a["at"], a["content"]) for a in message.get("added") or ()]  # context added while it was written
    return {**message_view(row, files=[], added=added), "read_only": True}
