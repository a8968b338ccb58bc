"""Attached files served back to their owner, and to no one else.

Another owner's file is a 404, as a conversation is. A file is sent with the type decoded from its
bytes when it was attached (an image type, or text/plain), `nosniff`, and a sandboxing policy, so
nothing stored is ever read by a browser as a page: text files download, images show.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app

from . import attachments_store
from .security import current_owner

bp = Blueprint("attachments", __name__)

SERVED_TYPES = {"image/png", "image/jpeg"}  # the only types an image is re-encoded to


@bp.get("/attachments/<int:attachment_id>")
def attachment(attachment_id: int):
    row = attachments_store.get(current_app.extensions["trickle"].engine, attachment_id, current_owner())
    if row is None:
        abort(404, "There is no such file.")
    image = row.kind == "image" and row.mime in SERVED_TYPES
    mimetype = row.mime if image else "text/plain"  # Flask adds the charset
    disposition = "inline" if image else "attachment"
    name = row.name.encode("ascii", "replace").decode().replace('"', "'")
    return Response(
        row.data,
        mimetype=mimetype,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'{disposition}; filename="{name}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=86400",
        },
    )
