"""Attachments over HTTP: stored with the message, sent upstream as OpenAI content parts (exactly what the
fake upstream received), kept on retry, regenerate and edit, exported, served only to their owner."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from tests.conftest import AppServer, client
from tests.fake_upstream import Script
from tests.test_faults import ended
from tests.test_security import HX, rows

FAKE = {"CHAT_MODEL": "fake-model", "OPENAI_API_KEY": "test-key"}


@pytest.fixture(scope="module")
def server(upstream):
    started = AppServer({**FAKE, "OPENAI_BASE_URL": upstream.base_url}).start()
    yield started
    started.stop()


def png(width: int, height: int, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg_with_location(width: int = 400, height: int = 300) -> bytes:
    """A photo carrying EXIF: a camera make and a GPS position (what must never leave the server)."""
    image = Image.new("RGB", (width, height), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPSInfo
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    assert b"SecretCam" in out.getvalue()
    return out.getvalue()


def post(server, session, content, files, conversation_id=None, headers=HX):
    data = {"content": content}
    if conversation_id:
        data["conversation_id"] = str(conversation_id)
    upload = [("files", (name, body)) for name, body in files]
    return session.post(server.url("/messages"), data=data, files=upload, headers=headers, timeout=30)


def answer_id(response) -> int:
    found = re.search(r'<article class="message assistant[^"]*" id="message-(\d+)"', response.text)
    assert found, response.text[:500]
    return int(found.group(1))


def last_user_content(upstream) -> list | str:
    body = upstream.requests[-1]["body"]
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def decoded(part: dict) -> Image.Image:
    url = part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def sent_with_files(server, upstream, session, files, content="What is in these?"):
    upstream.push(Script(text="I see them."))
    response = post(server, session, content, files)
    assert response.status_code == 200, response.text[:500]
    answer = answer_id(response)
    assert ended(server, answer).status == "done"
    return response, answer


def test_an_image_and_a_text_file_go_upstream_as_content_parts_resized_and_without_exif(server, upstream):
    person = client(server)
    big = png(4000, 1000)
    notes = b"name,score\nada,3\n"
    response, answer = sent_with_files(server, upstream, person, [("wide.png", big), ("scores.csv", notes)])
    content = last_user_content(upstream)
    assert content[0] == {"type": "text", "text": "What is in these?"}
    image = decoded(content[1])
    assert image.size == (1568, 392), "resized server-side to the longest edge, keeping the aspect ratio"
    assert content[2] == {"type": "text", "text": '<file name="scores.csv">\nname,score\nada,3\n\n</file>'}
    assert len(content) == 3
    assert 'class="thumbnail"' in response.text and "scores.csv" in response.text

    upstream.push(Script(text="Located."))
    response, _ = sent_with_files(server, upstream, person, [("holiday.jpg", jpeg_with_location())], "Where?")
    image = decoded(last_user_content(upstream)[1])
    assert image.size == (400, 300)
    assert not image.getexif(), "EXIF (camera, GPS) is stripped"
    raw = base64.b64decode(last_user_content(upstream)[1]["image_url"]["url"].split(",", 1)[1])
    assert b"SecretCam" not in raw
    stored = rows(server, "SELECT name, kind, mime, width, height FROM attachments ORDER BY id")
    assert stored[-3:] == [
        ("wide.jpg", "image", "image/jpeg", 1568, 392),
        ("scores.csv", "text", "text/plain", None, None),
        ("holiday.jpg", "image", "image/jpeg", 400, 300),
    ]


def test_retry_regenerate_and_edit_resend_the_files(server, upstream):
    person = client(server)
    response, answer = sent_with_files(server, upstream, person, [("dot.png", png(10, 10)), ("a.txt", b"alpha")])
    first = last_user_content(upstream)
    assert [part["type"] for part in first] == ["text", "image_url", "text"]

    upstream.push(Script(text="Again."))
    regenerated = person.post(server.url(f"/messages/{answer}/regenerate"), headers=HX, timeout=10)
    assert regenerated.status_code == 200
    new_answer = int(re.search(r'id="message-(\d+)"', regenerated.text).group(1))
    ended(server, new_answer)
    assert last_user_content(upstream) == first

    upstream.push(Script(status=400, error_message="boom"))
    regenerated = person.post(server.url(f"/messages/{new_answer}/regenerate"), headers=HX, timeout=10)
    failed = int(re.search(r'id="message-(\d+)"', regenerated.text).group(1))
    assert ended(server, failed).status == "failed"
    upstream.push(Script(text="Retried."))
    assert person.post(server.url(f"/messages/{failed}/retry"), headers=HX, timeout=10).status_code == 200
    assert ended(server, failed).status == "done"
    assert last_user_content(upstream) == first

    question = rows(server, "SELECT reply_to FROM messages WHERE id = :id", id=answer)[0][0]
    upstream.push(Script(text="Edited."))
    edited = person.post(server.url(f"/messages/{question}/edit"), data={"content": "Edited question"}, headers=HX)
    assert edited.status_code == 200
    new_question = rows(server, "SELECT max(id) FROM messages WHERE role = 'user'")[0][0]
    ended(server, new_question + 1)
    content = last_user_content(upstream)
    assert content[0] == {"type": "text", "text": "Edited question"} and content[1:] == first[1:]
    assert "dot.png" not in edited.text and "dot.jpg" in edited.text, "the edited question shows its files"


def test_the_json_export_holds_each_file_as_a_data_url(server, upstream):
    person = client(server)
    sent_with_files(server, upstream, person, [("dot.png", png(8, 8)), ("a.md", b"# Title")])
    conversation = rows(server, "SELECT max(id) FROM conversations")[0][0]
    exported = person.get(server.url(f"/c/{conversation}/export.json"), timeout=10)
    assert exported.status_code == 200, exported.text[:300]
    files = json.loads(exported.text)["messages"][0]["attachments"]
    assert [(f["name"], f["type"]) for f in files] == [("dot.jpg", "image/jpeg"), ("a.md", "text/plain")]
    assert files[0]["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(files[1]["url"].split(",", 1)[1]) == b"# Title"


def test_a_file_is_served_to_its_owner_only_with_its_decoded_type_and_nosniff(server, upstream):
    person, stranger = client(server), client(server)
    response, _ = sent_with_files(server, upstream, person, [("dot.png", png(8, 8)), ("page.txt", b"just text")])
    image_url, text_url = re.findall(r'href="(/attachments/\d+)"', response.text)[:2]
    shown = person.get(server.url(image_url), timeout=10)
    assert shown.status_code == 200 and shown.headers["Content-Type"] == "image/jpeg"
    assert shown.headers["X-Content-Type-Options"] == "nosniff"
    assert shown.headers["Content-Disposition"].startswith("inline")
    assert Image.open(io.BytesIO(shown.content)).size == (8, 8)
    text = person.get(server.url(text_url), timeout=10)
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.headers["Content-Disposition"].startswith("attachment"), "a text file downloads, never renders"
    assert "sandbox" in text.headers["Content-Security-Policy"]
    for url in (image_url, text_url, "/attachments/999999"):
        refused = stranger.get(server.url(url), timeout=10)
        assert refused.status_code == 404 and "dot" not in refused.text


def test_deleting_the_conversation_deletes_its_files(server, upstream):
    person = client(server)
    sent_with_files(server, upstream, person, [("dot.png", png(8, 8))])
    conversation = rows(server, "SELECT max(id) FROM conversations")[0][0]
    before = rows(server, "SELECT count(*) FROM attachments")[0][0]
    assert person.post(server.url(f"/c/{conversation}/delete"), headers=HX, timeout=10).status_code == 200
    assert rows(server, "SELECT count(*) FROM attachments")[0][0] == before - 1


def test_the_no_javascript_form_posts_files_too(server, upstream):
    person = client(server)
    upstream.push(Script(text="Seen without JavaScript."))
    response = post(server, person, "plain form", [("dot.png", png(20, 20))], headers={})
    assert response.status_code == 200 and "Seen without JavaScript." in response.text  # after the 303
    assert 'class="thumbnail"' in response.text
    assert [part["type"] for part in last_user_content(upstream)] == ["text", "image_url"]
