"""Attached files read from their bytes: images checked, scaled down and re-encoded; text as UTF-8.

The type is decided from the bytes, never from the name or the browser's word: a PNG, JPEG, GIF or
WebP is an image, UTF-8 text without NUL is a text file, anything else is refused. Markup a browser
would run (HTML, SVG, XML) is refused even as text. An image's header is read first and one with more
than MAX_PIXELS is refused before any pixel is decoded; the rest are decoded fully (a truncated or
corrupt one is refused here, not later), turned upright, scaled to MAX_EDGE and saved anew, which
leaves EXIF (location), comments and colour profiles behind. Refusals are HTTP errors with a sentence.
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps
from werkzeug.exceptions import HTTPException

IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF"}
ACTIVE_NAMES = (".html", ".htm", ".xhtml", ".svg", ".svgz", ".xml", ".xsl", ".js", ".mjs")
# What a browser sniffs as markup (the WHATWG MIME sniffing patterns, and XML, which carries SVG).
ACTIVE_START = re.compile(rb"\s*<(!doctype\s+html|html|head|body|script|iframe|svg|\?xml|object|embed)", re.I)


class AttachmentRefused(HTTPException):
    """A file that cannot be attached: a 4xx and a sentence naming the file."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.code = status


@dataclass(frozen=True)
class Attachment:
    """A file as stored and sent: an image (re-encoded) or UTF-8 text."""

    name: str
    kind: str  # "image" or "text"
    mime: str  # image/png, image/jpeg or text/plain
    data: bytes
    width: int | None = None
    height: int | None = None


MAX_EDGE = 1568  # px, an image's longest side once stored and sent (what vision models scale to anyway)
MAX_PIXELS = 50_000_000  # width × height from the header; past it the image is refused unread


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def content_part(file) -> dict:
    """One file (an `Attachment` or its stored row) as an OpenAI content part: an image as an
    `image_url` with a `data:` URL, a text file inlined between marks that name it."""
    if file.kind == "image":
        return {"type": "image_url", "image_url": {"url": data_url(file.mime, file.data)}}
    name = file.name.replace('"', "'")
    return {"type": "text", "text": f'<file name="{name}">\n{file.data.decode("utf-8")}\n</file>'}


def clean_name(name: str | None) -> str:
    """The file's own name, without folders or control characters, at most 200 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:200] or "file"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def read_attachment(name: str | None, data: bytes, max_bytes: int) -> Attachment:
    """The file as it will be stored, or `AttachmentRefused` saying why not."""
    name = clean_name(name)
    if not data:
        raise AttachmentRefused(400, f"{name} is empty.")
    if len(data) > max_bytes:
        raise AttachmentRefused(
            413,
            f"{name} is {_megabytes(len(data))}; one file may be {_megabytes(max_bytes)} (ATTACHMENT_MAX_MB).",
        )
    image_format = next((kind for sign, kind in IMAGE_SIGNATURES.items() if data.startswith(sign)), None)
    if image_format is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        image_format = "WEBP"
    if image_format:
        return _image(name, data, image_format)
    return _text(name, data)


def _text(name: str, data: bytes) -> Attachment:
    if data.startswith(b"%PDF-"):
        raise AttachmentRefused(415, f"{name} is a PDF, which cannot be attached yet: paste the text you need.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentRefused(
            415, f"{name} is neither an image (PNG, JPEG, GIF, WebP) nor UTF-8 text, so it cannot be attached."
        ) from None
    if "\x00" in text:
        raise AttachmentRefused(415, f"{name} holds binary data, not text, so it cannot be attached.")
    if ACTIVE_START.match(data.removeprefix(b"\xef\xbb\xbf")[:1024]) or name.lower().endswith(ACTIVE_NAMES):
        raise AttachmentRefused(415, f"{name} is HTML, SVG, XML or script, which is never attached.")
    return Attachment(name, "text", "text/plain", text.encode("utf-8"))


def _image(name: str, data: bytes, image_format: str) -> Attachment:
    unreadable = AttachmentRefused(400, f"{name} could not be read as an image: it is truncated or corrupt.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                raise AttachmentRefused(
                    413,
                    f"{name} is {image.width:,} × {image.height:,} pixels; an image may have at most {MAX_PIXELS:,}.",
                )
            image.load()  # the first frame of an animation
            image = ImageOps.exif_transpose(image)
    except AttachmentRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AttachmentRefused(413, f"{name} has too many pixels to be read safely .") from None
    except Exception:  # Pillow reports bad data as OSError, SyntaxError, ValueError, struct.error…
        raise unreadable from None
    keep_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if keep_alpha else "RGB")
    image.thumbnail((MAX_EDGE, MAX_EDGE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if keep_alpha:
        image.save(out, "PNG", optimize=True)
    else:
        image.save(out, "JPEG", quality=85, optimize=True)
    mime, extension = ("image/png", ".png") if keep_alpha else ("image/jpeg", ".jpg")
    name = re.sub(r"(\.[A-Za-z0-9]{1,5})?$", extension, name, count=1)  # named as what it now is
    return Attachment(name, "image", mime, out.getvalue(), image.width, image.height)
