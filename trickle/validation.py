"""Requests checked before any view runs: ids a database can hold, whole bodies, UTF-8 forms."""

from __future__ import annotations

from urllib.parse import parse_qsl

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from .errors import error_response

# Views that read a large body themselves, streamed to a temporary file, under IMPORT_MAX_MB.
STREAMED_BODIES = {"history.import_history"}
# Views whose multipart forms may carry files in `ATTACHMENT_FIELD` parts, on top of MAX_CONTENT_LENGTH:
# up to MESSAGE_ATTACHMENTS_MAX_MB of them (the rest of the form stays under MAX_CONTENT_LENGTH).
ATTACHMENT_BODIES = {"pages.send_message"}
ATTACHMENT_FIELD = "files"
PART_OVERHEAD = 1024  # a part's headers and boundary, allowed for each file


class IdConverter(IntegerConverter):
    """`<int:…>` ids no larger than a database integer: a bigger one is a 404, not an OverflowError."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def init_app(app: Flask) -> None:
    app.url_map.converters["int"] = IdConverter

    @app.before_request
    def whole_body_checked():
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        if request.endpoint in STREAMED_BODIES:  # the limit applies before anything reads the form
            request.max_content_length = app.extensions["trickle"].settings.import_max_bytes
            return None
        with_files = request.endpoint in ATTACHMENT_BODIES and request.mimetype == "multipart/form-data"
        if with_files:
            settings = app.extensions["trickle"].settings
            request.max_content_length = (
                app.config["MAX_CONTENT_LENGTH"]
                + settings.message_attachments_max_bytes
                + PART_OVERHEAD * (settings.max_attachments + 1)
            )
            body = request.get_data(cache=True)
            if request.content_length is None and len(body) >= request.max_content_length:
                raise RequestEntityTooLarge()  # chunked: cut at the limit, not refused, otherwise
            return _form_beside_files(body, app.config["MAX_CONTENT_LENGTH"])
        if request.content_length is None:  # chunked: Werkzeug stops at the limit without a 413
            if len(request.get_data(cache=True)) >= app.config["MAX_CONTENT_LENGTH"]:
                raise RequestEntityTooLarge()
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            data = request.get_data(cache=True)
            try:
                if request.mimetype == "multipart/form-data":
                    data.decode("utf-8")
                else:
                    parse_qsl(data.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
            except (UnicodeDecodeError, ValueError):
                return error_response(400, "The form was not sent as UTF-8 text.")
        return None


def _form_beside_files(body: bytes, limit: int):
    """A multipart form with attached files: its other fields are UTF-8 and under MAX_CONTENT_LENGTH
    together (a large field is no file), whatever the files weigh (their own limits come later)."""
    boundary = request.mimetype_params.get("boundary", "")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"), max_form_memory_size=None)
    decoder.receive_data(body)
    decoder.receive_data(None)
    outside_files, field, chunks = 0, None, []
    try:
        while not isinstance(event := decoder.next_event(), (NeedData, Epilogue)):
            if isinstance(event, (Field, File)):
                field, chunks = event, []
            elif isinstance(event, Data) and not (isinstance(field, File) and field.name == ATTACHMENT_FIELD):
                outside_files += len(event.data) + PART_OVERHEAD * (not chunks)
                chunks.append(event.data)
                if outside_files > limit:
                    raise RequestEntityTooLarge()
                if not event.more_data and isinstance(field, Field):
                    b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return error_response(400, "The form was not sent as UTF-8 text.")
    except ValueError:
        return error_response(400, "The form could not be read: it is malformed or cut short.")
    return None
