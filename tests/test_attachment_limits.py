"""Attachments that must be refused: each a readable 4xx (an htmx fragment for the composer), nothing
stored, nothing sent upstream, no traceback, and the worker goes on serving. Every limit is a setting;
this server sets them small."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from PIL import Image

from tests.conftest import AppServer, client
from tests.fake_upstream import Script
from tests.test_attachments import answer_id, last_user_content, png, post
from tests.test_faults import ended
from tests.test_security import HX, assert_readable, rows

MB = 1024 * 1024
LIMITS = {"ATTACHMENT_MAX_MB": "1", "MESSAGE_ATTACHMENTS_MAX_MB": "2", "MAX_ATTACHMENTS": "3"}


@pytest.fixture(scope="module")
def server(upstream):
    env = {"CHAT_MODEL": "fake-model", "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": upstream.base_url}
    started = AppServer({**env, **LIMITS, "OWNER_DAILY_ATTACHMENT_MB": "3"}).start()
    yield started
    started.stop()


def stored(server) -> tuple:
    return tuple(
        rows(server, f"SELECT count(*) FROM {table}")[0][0] for table in ("conversations", "messages", "attachments")
    )


def refused(server, upstream, files, status, *phrases, content="look at this"):
    """Post the files: a readable `status` naming the problem, and nothing changed anywhere."""
    person = client(server)
    before, sent, log = stored(server), len(upstream.requests), len(server.read_log())
    response = post(server, person, content, files)
    message = assert_readable(response, status, *phrases)
    assert response.headers.get("HX-Retarget") == "#composer-error"
    assert stored(server) == before, "a refused file stored something"
    assert len(upstream.requests) == sent, "a refused file reached the provider"
    new_log = server.read_log()[log:]
    assert "Traceback" not in new_log and "unhandled error" not in new_log, new_log[-2000:]
    return message


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims these dimensions, with a few bytes of pixel data: a decompression bomb's
    shape (decoding it would allocate width × height pixels)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_a_file_over_attachment_max_mb_is_a_413(server, upstream):
    refused(server, upstream, [("big.png", b"\x89PNG\r\n\x1a\n" + os.urandom(MB + 10))], 413, "ATTACHMENT_MAX_MB")


def test_files_over_message_attachments_max_mb_together_are_a_413(server, upstream):
    files = [(f"part{n}.txt", b"a" * (MB * 9 // 10)) for n in range(3)]
    refused(server, upstream, files, 413, "MESSAGE_ATTACHMENTS_MAX_MB")


def test_a_body_far_over_every_limit_is_a_413_before_it_is_read(server, upstream):
    refused(server, upstream, [("huge.txt", b"a" * 5 * MB)], 413)


def test_more_files_than_max_attachments_is_a_413(server, upstream):
    refused(server, upstream, [(f"{n}.txt", b"hi") for n in range(4)], 413, "MAX_ATTACHMENTS")


def test_the_type_comes_from_the_bytes_an_html_file_named_png_is_refused(server, upstream):
    html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
    refused(server, upstream, [("cat.png", html)], 415, "cat.png", "HTML")
    refused(server, upstream, [("notes.txt", b"  <html><img src=x onerror=alert(1)>")], 415)


def test_svg_is_refused_whatever_it_is_called(server, upstream):
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>'
    refused(server, upstream, [("logo.svg", svg)], 415, "SVG")
    refused(server, upstream, [("logo.png", svg)], 415, "SVG")
    refused(server, upstream, [("logo.txt", svg.split(b"?>", 1)[1])], 415)


def test_a_corrupt_or_truncated_png_is_a_readable_400(server, upstream):
    whole = png(300, 200)
    refused(server, upstream, [("cut.png", whole[: len(whole) // 2])], 400, "cut.png", "truncated or corrupt")
    refused(server, upstream, [("noise.png", b"\x89PNG\r\n\x1a\n" + os.urandom(2000))], 400, "corrupt")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    refused(server, upstream, [("cut.jpg", jpeg.getvalue()[:200])], 400, "corrupt")


def test_an_empty_file_is_a_400(server, upstream):
    refused(server, upstream, [("empty.txt", b"")], 400, "empty.txt is empty")


def test_binary_and_pdf_files_are_refused_saying_what_they_are(server, upstream):
    refused(server, upstream, [("data.bin", bytes(range(256)) * 4)], 415, "neither an image")
    refused(server, upstream, [("nul.txt", b"text\x00with a NUL")], 415, "binary")
    refused(server, upstream, [("paper.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")], 415, "PDF")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(server, upstream):
    refused(server, upstream, [("bomb.png", png_header_only(10_000, 6_000))], 413, "10,000 × 6,000 pixels")
    refused(server, upstream, [("bigger.png", png_header_only(50_000, 50_000))], 413, "too many pixels")


def test_the_owner_daily_attachment_budget_is_a_413_for_that_owner_only(server, upstream):
    alice, bob = client(server), client(server)
    text = [("notes.txt", b"n" * (MB * 9 // 10))]
    for _ in range(3):
        upstream.push(Script(text="ok"))
        response = post(server, alice, "read", text)
        assert response.status_code == 200, response.text[:300]
        ended(server, answer_id(response))
    before = stored(server)
    response = post(server, alice, "one more", text)
    assert_readable(response, 413, "OWNER_DAILY_ATTACHMENT_MB")
    assert stored(server) == before
    upstream.push(Script(text="ok"))
    response = post(server, bob, "mine", text)
    assert response.status_code == 200, "another owner has a budget of their own"
    ended(server, answer_id(response))


def test_after_all_that_the_worker_still_serves_attachments(server, upstream):
    pids = server.worker_pids()
    upstream.push(Script(text="Fine."))
    response = post(server, client(server), "still fine?", [("dot.png", png(4, 4))])
    assert response.status_code == 200
    assert ended(server, answer_id(response)).status == "done"
    assert [part["type"] for part in last_user_content(upstream)] == ["text", "image_url"]
    assert server.worker_pids() == pids, "no worker died or was replaced"


def test_a_form_field_that_is_not_utf8_beside_a_file_is_a_400(server, upstream):
    person = client(server)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="content"\r\n\r\ncaf\xe9\r\n'
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nhello\r\n--b--\r\n'
    )
    before = stored(server)
    response = person.post(
        server.url("/messages"), data=body, headers={**HX, "Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_readable(response, 400, "UTF-8")
    assert stored(server) == before


def test_a_chunked_upload_over_the_limit_is_a_413_not_cut_short(server, upstream):
    boundary = "b"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="content"\r\n\r\nhi\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
        ).encode()
        + b"a" * (4 * MB)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    person = client(server)
    before = stored(server)
    response = person.post(
        server.url("/messages"),
        data=(body[start : start + 65536] for start in range(0, len(body), 65536)),
        headers={**HX, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert_readable(response, 413)
    assert stored(server) == before


def test_a_malformed_upload_says_so(server, upstream):
    body = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nno end'
    response = client(server).post(
        server.url("/messages"), data=body, headers={**HX, "Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 400
