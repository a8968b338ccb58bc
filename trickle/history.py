"""A whole history in and out: import an export (ChatGPT, Open WebUI or Trickle), export every
conversation as one Trickle file (the format the import reads, so a round trip gives the same
history back), and delete everything.

An import is one transaction: a malformed file is a 400 naming what is wrong, with nothing stored.
The upload is limited by IMPORT_MAX_MB rather than MAX_CONTENT_LENGTH (`validation.STREAMED_BODIES`);
werkzeug spools it to a temporary file and `importers` parses it from there one conversation at a time.
"""

from __future__ import annotations

import json
import time

import gevent
from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from . import history_store, importers, storage
from .security import current_owner

bp = Blueprint("history", __name__)


def trickle():
    return current_app.extensions["trickle"]


def _refused(status: int, message: str):
    """An import refused: for htmx in the import form's own result area, else the error page."""
    if not request.headers.get("HX-Request"):
        abort(status, message)
    return render_template("_import_result.html", problem=message), status


def _pause(engine):
    """Between two conversations, let this worker's other requests run; not on SQLite, where one of
    them writing would wait on the import's write lock and block the whole worker (sqlite3 waits
    in C, not cooperatively), so the import could never resume to commit."""
    return None if engine.dialect.name == "sqlite" else gevent.sleep


@bp.post("/history/import")
def import_history():
    """Store every conversation of an uploaded export for this owner, or none of them."""
    app = trickle()
    limit = app.settings.import_max_bytes  # validation.STREAMED_BODIES set it as this request's limit
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        return _refused(413, f"This file is over the import limit of {limit // 2**20} MB (IMPORT_MAX_MB).")
    if upload is None or not upload.filename:
        return _refused(400, "Choose an export file to import first.")
    name = upload.filename[:80]
    try:
        kind, found = importers.read_history(upload.stream)
        count = history_store.import_conversations(app.engine, current_owner(), found, pause=_pause(app.engine))
    except importers.ImportProblem as problem:
        return _refused(400, f"{name}: {problem} Nothing was imported.")
    if count == 0:
        return _refused(400, f"{name} holds no conversations: nothing was imported.")
    if not request.headers.get("HX-Request"):
        return redirect(url_for("pages.index"), 303)
    plural = "conversation" if count == 1 else "conversations"
    return render_template(
        "_import_result.html",
        imported=f"Imported {count:,} {plural} from {'an' if kind[0] in 'AEIOU' else 'a'} {kind} export.",
        conversations=storage.list_conversations(app.engine, current_owner()),
    )


@bp.get("/history/export.json")
def export_history():
    """Every conversation of this owner, streamed as one Trickle export file."""
    engine, owner = trickle().engine, current_owner()

    def body():
        header = {"format": importers.TRICKLE_FORMAT, "version": importers.TRICKLE_VERSION, "exported_at": time.time()}
        yield json.dumps(header)[:-1] + ', "conversations": ['
        for position, conversation in enumerate(history_store.export_conversations(engine, owner)):
            yield ("," if position else "") + "\n" + json.dumps(conversation, ensure_ascii=False)
        yield "\n]}\n"

    filename = time.strftime("trickle-history-%Y-%m-%d.json", time.gmtime())
    return Response(
        body(), mimetype="application/json", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@bp.post("/history/delete-all")
def delete_all():
    """Delete every conversation of this owner (and their shared links), once confirmed."""
    app = trickle()
    if request.form.get("confirm") != "delete":
        abort(400, "Tick the box to confirm that every conversation is to be deleted.")
    owner = current_owner()
    for message_id in history_store.streaming_of(app.engine, owner):
        app.registry.stop(message_id)
    history_store.delete_all(app.engine, owner)
    if request.headers.get("HX-Request"):
        return "", 200, {"HX-Redirect": url_for("pages.index")}
    return redirect(url_for("pages.index"), 303)
