"""OpenAI-style content arrays in the JSON protocols (`/api/chat`, `/ws`, the AI SDK's files): checked.

A part is `{"type": "text", "text": …}`, `{"type": "image_url", "image_url": {"url": "data:…"}}` or
OpenAI's `{"type": "file", "file": {"filename": …, "file_data": "data:…"}}`. Files come as `data:` URLs
only (this server fetches nothing on a client's word) and go through the same reading as the page's
attachments: the type from the bytes, images re-encoded small and without metadata, text inlined.
MAX_ATTACHMENTS, ATTACHMENT_MAX_MB and MESSAGE_ATTACHMENTS_MAX_MB hold per message; the whole request
still fits in MAX_CONTENT_LENGTH (nothing is stored, so OWNER_DAILY_ATTACHMENT_MB does not apply).
"""

from __future__ import annotations

import base64
import binascii
import re

from werkzeug.exceptions import HTTPException

from .attachments import AttachmentRefused, content_part, read_attachment

DATA_URL = re.compile(r"data:[\w.+/-]*(?:;[\w.+-]+=[^;,]*)*;base64,(.*)", re.S)


class BadParts(HTTPException):
    """A content array that cannot be sent on: a 4xx and a sentence naming the part."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.code = status


def _file_bytes(url, where: str) -> bytes:
    found = DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if found is None:
        raise BadParts(400, f"{where} must be a data: URL (base64); this server does not fetch files by address.")
    try:
        return base64.b64decode(found.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise BadParts(400, f"{where} is not valid base64.") from None


def _file_of(part: dict, where: str) -> tuple[str, bytes, bool]:
    """(name, bytes, must be an image) of a file part."""
    if part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return "image", _file_bytes(url, f"{where}.image_url.url"), True
    file = part.get("file")
    if not isinstance(file, dict):
        raise BadParts(400, f'{where}.file must be an object with "file_data" (a data: URL).')
    name = file.get("filename") if isinstance(file.get("filename"), str) else "file"
    return name, _file_bytes(file.get("file_data"), f"{where}.file.file_data"), False


def read_parts(parts: list, where: str, role: str, settings) -> tuple[list[dict], int]:
    """The parts as they go upstream, and how many characters of text they hold; `BadParts` otherwise."""
    clean, chars, files, total = [], 0, 0, 0
    for index, part in enumerate(parts):
        here = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise BadParts(400, f"{here}.text must be a string.")
            clean.append({"type": "text", "text": part["text"]})
            chars += len(part["text"])
            continue
        if kind not in ("image_url", "file"):
            raise BadParts(400, f'{here} must be a "text", "image_url" or "file" part.')
        if role != "user":
            raise BadParts(400, f"{here}: only user messages may carry files.")
        name, data, image_only = _file_of(part, here)
        files, total = files + 1, total + len(data)
        if files > settings.max_attachments:
            raise BadParts(413, f"{where} has more than {settings.max_attachments} files (MAX_ATTACHMENTS).")
        if total > settings.message_attachments_max_bytes:
            raise BadParts(413, f"The files of {where} are over MESSAGE_ATTACHMENTS_MAX_MB together.")
        try:
            read = read_attachment(name, data, settings.attachment_max_bytes)
        except AttachmentRefused as refused:
            raise BadParts(refused.code, f"{here}: {refused.description}") from None
        if image_only and read.kind != "image":
            raise BadParts(415, f"{here} is not a PNG, JPEG, GIF or WebP image.")
        clean.append(content_part(read))
    return clean, chars
