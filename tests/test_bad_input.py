"""Bad input never breaks anything: malformed or oversize bodies, wrong types, unknown ids, bytes that are not
UTF-8. Each gets a 4xx with a sentence saying what is wrong (JSON under /api, a page or an htmx fragment
elsewhere), no traceback, nothing written to the database and nothing sent to the provider. Hypothesis
fuzzers then throw random JSON at /api/chat and over /ws (the same generators), random form fields at
/messages, and random ids, fields, queries and headers at every page endpoint, and expect no 5xx ever
(on /ws: an error message, never a closed socket).

The app runs in process (Flask's test client); bodies without a Content-Length go to gunicorn, whose
reading of a chunked body is the point there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import sse
from tests.conftest import AppServer, InProcessApp, run_greenlets
from tests.fake_upstream import Script
from tests.test_security import (
    HX,
    Apps,
    Servers,
    _registry,
    assert_readable,
    counts,
    exchange,
    json_body,
    owner,
    rows,
    stranger,
    wait_ended,
)
from tests.test_ws import connect, receive

MAX_CONTENT_LENGTH = 4096
MAX_INPUT_CHARS = 200
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HUGE = "9" * 30  # an id no database integer holds


@pytest.fixture(scope="module")
def server(upstream):
    built = Apps(upstream)
    yield built.start(MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH, MAX_INPUT_CHARS=MAX_INPUT_CHARS)
    built.close()


@pytest.fixture(scope="module")
def served(upstream):
    """The same settings under gunicorn, for bodies sent without a Content-Length."""
    started = Servers(upstream)
    _registry.append(started)
    yield started.start(
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH, MAX_INPUT_CHARS=MAX_INPUT_CHARS, RATE_LIMIT_WS_MESSAGES="100000/minute"
    )
    started.close()
    _registry.remove(started)


@pytest.fixture(scope="module")
def served_person(served):
    """An owner with one finished conversation, on the gunicorn server."""
    session = owner(served)
    sent, _ = exchange(served, session, "a conversation of my own")
    session.conversation_id, session.answer_id = sent.conversation_id, sent.answer_id
    return session


@pytest.fixture(scope="module")
def person(server):
    """An owner (cookie and CSRF token) with one finished conversation."""
    session = owner(server)
    sent, _ = exchange(server, session, "a conversation of my own")
    session.conversation_id, session.answer_id = sent.conversation_id, sent.answer_id
    return session


def everything(server) -> tuple:
    return rows(server, "SELECT * FROM conversations ORDER BY id"), rows(server, "SELECT * FROM messages ORDER BY id")


def live_generations(server: AppServer | InProcessApp) -> int:
    if isinstance(server, AppServer):
        return requests.get(server.url("/healthz"), timeout=10).json()["live_generations"]
    return stranger(server).get("/healthz").json["live_generations"]


def pause(server: AppServer | InProcessApp, seconds: float) -> None:
    """Let time pass for the server: in process, its greenlets run meanwhile."""
    if isinstance(server, AppServer):
        time.sleep(seconds)
    else:
        run_greenlets(seconds)


def settle(server, timeout: float = 10.0) -> None:
    """Wait until no answer is being written (an earlier test's answer must not count against this one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = counts(server)
        pause(server, 0.1 if isinstance(server, AppServer) else 0)  # in process: ready greenlets run
        if live_generations(server) == 0 and counts(server) == first:
            return
    pytest.fail(f"answers still being written after {timeout} s")


@contextlib.contextmanager
def changes_nothing(server, upstream):
    """The block writes no row, sends nothing upstream and leaves no traceback in the server log."""
    settle(server)
    before, sent, log = counts(server), len(upstream.requests), len(server.read_log())
    snapshot = everything(server)
    yield
    pause(server, 0.05)
    assert counts(server) == before
    assert everything(server) == snapshot
    assert len(upstream.requests) == sent, "a bad request reached the provider"
    new_log = server.read_log()[log:]
    assert "Traceback" not in new_log and "unhandled error" not in new_log, new_log[-3000:]


def assert_json_error(response, status: int | tuple[int, ...], *phrases: str) -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers["Content-Type"]
    message = json_body(response)["error"]
    assert isinstance(message, str) and len(message) > 10 and " " in message, message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert "Traceback" not in response.text
    return message


def assert_fragment(response, status: int) -> str:
    """An htmx error: the status, a fragment (not a page) aimed at the composer's error line."""
    message = assert_readable(response, status)
    assert "<html" not in response.text
    assert response.headers.get("HX-Retarget") == "#composer-error"
    return message


# -- /api/chat -------------------------------------------------------------------------------------

BAD_JSON = {
    "not json": b"not json",
    "truncated": b'{"messages": [{"role": "user", "content": "hi"',
    "empty body": b"",
    "json null": b"null",
    "json number": b"42",
    "json string": b'"hello"',
    "json list": b'[{"role": "user", "content": "hi"}]',
    "no messages": b"{}",
    "messages null": b'{"messages": null}',
    "messages a string": b'{"messages": "hi"}',
    "messages an object": b'{"messages": {"role": "user", "content": "hi"}}',
    "messages empty": b'{"messages": []}',
    "message a number": b'{"messages": [1]}',
    "message null": b'{"messages": [null]}',
    "message a string": b'{"messages": ["hi"]}',
    "message a list": b'{"messages": [["user", "hi"]]}',
    "no role": b'{"messages": [{"content": "hi"}]}',
    "role a number": b'{"messages": [{"role": 1, "content": "hi"}]}',
    "role null": b'{"messages": [{"role": null, "content": "hi"}]}',
    "unknown role": b'{"messages": [{"role": "wizard", "content": "hi"}]}',
    "role tool": b'{"messages": [{"role": "tool", "content": "hi"}]}',
    "role in capitals": b'{"messages": [{"role": "User", "content": "hi"}]}',
    "no content": b'{"messages": [{"role": "user"}]}',
    "content a number": b'{"messages": [{"role": "user", "content": 5}]}',
    "content null": b'{"messages": [{"role": "user", "content": null}]}',
    "content an object": b'{"messages": [{"role": "user", "content": {"text": "hi"}}]}',
    "second message bad": b'{"messages": [{"role": "user", "content": "hi"}, {"role": "user"}]}',
    "model a number": b'{"messages": [{"role": "user", "content": "hi"}], "model": 5}',
    "model a list": b'{"messages": [{"role": "user", "content": "hi"}], "model": ["fake-model"]}',
    "model true": b'{"messages": [{"role": "user", "content": "hi"}], "model": true}',
    "parts a string": b'{"messages": [{"role": "user", "parts": "hi"}]}',
    "part text a number": b'{"messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}]}',
    "no text parts at all": b'{"messages": [{"role": "user", "parts": [{"type": "file", "url": "x"}]}]}',
    "not utf-8": b'{"messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}',
    "latin-1": '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"),
    "json with nan": b'{"messages": [{"role": "user", "content": "hi"}], "model": NaN}',
}


@pytest.mark.parametrize("body", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_a_malformed_chat_request_is_a_400_with_a_json_error(server, upstream, body):
    with changes_nothing(server, upstream):
        response = stranger(server).post("/api/chat", data=body, headers=JSON)
        assert_json_error(response, 400)


def test_a_json_body_without_the_json_content_type_is_a_400(server, upstream):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    with changes_nothing(server, upstream):
        for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
            headers = {"Content-Type": content_type} if content_type else {}
            response = stranger(server).post("/api/chat", data=body.encode(), headers=headers)
            assert_json_error(response, 400, "JSON")


def test_an_unknown_protocol_is_a_400_naming_the_choices(server, upstream):
    with changes_nothing(server, upstream):
        response = stranger(server).post(
            "/api/chat?protocol=grpc", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert_json_error(response, 400, "ai-sdk")


def test_api_text_that_is_not_valid_unicode_is_a_400(server, upstream):
    """JSON can spell a lone surrogate (\\ud800), which no UTF-8 text (and no provider) can carry."""
    with changes_nothing(server, upstream):
        response = stranger(server).post(
            "/api/chat",
            headers=JSON,
            data=b'{"messages": [{"role": "user", "content": "half a pair: \\ud800"}]}',
        )
        body = response.get_data().decode(errors="replace")
        assert response.status_code == 400, f"{response.status_code}: {body[:300]}"
        assert_json_error(response, 400)


def test_an_oversize_chat_request_is_a_413(server, upstream):
    with changes_nothing(server, upstream):
        content = "x" * (MAX_CONTENT_LENGTH + 100)
        response = stranger(server).post("/api/chat", json={"messages": [{"role": "user", "content": content}]})
        assert_json_error(response, 413)
        # Under the byte limit but over MAX_INPUT_CHARS (four times, for a whole conversation).
        messages = [{"role": "user", "content": "y" * 300} for _ in range(3)]
        response = stranger(server).post("/api/chat", json={"messages": messages})
        assert_json_error(response, 413, "MAX_INPUT_CHARS")


def chunked(body: bytes, size: int = 1000):
    """A body sent with Transfer-Encoding: chunked (no Content-Length), as a streaming client sends it."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_an_oversize_chunked_chat_request_is_a_413(served, upstream):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "padding": "p" * MAX_CONTENT_LENGTH}).encode()
    with changes_nothing(served, upstream):
        response = requests.post(served.url("/api/chat"), data=chunked(body), headers=JSON, timeout=10)
        assert_json_error(response, 413)


def test_unknown_api_urls_and_methods_get_json_errors(server, upstream):
    with changes_nothing(server, upstream):
        assert_json_error(stranger(server).get("/api/chat"), 405)
        assert_json_error(stranger(server).post("/api/nothing-here", json={}), 404)


# -- /messages and the other forms -------------------------------------------------------------------


def test_a_message_without_content_is_a_400(server, upstream, person):
    with changes_nothing(server, upstream):
        for data in (
            {},
            {"content": ""},
            {"content": "   \n\t "},
            {"text": "wrong field"},
            {"conversation_id": str(person.conversation_id)},
        ):
            response = person.post("/messages", data=data, headers=HX)
            assert "message" in assert_fragment(response, 400).lower()
            response = person.post("/messages", data=data)
            assert_readable(response, 400)
            assert "<html" in response.text  # without JavaScript: a whole page saying it


@pytest.mark.parametrize("conversation_id", ["abc", "1.5", "1e3", "0x10", "[]", "one"])
def test_a_conversation_id_that_is_not_a_number_is_a_400(server, upstream, person, conversation_id):
    with changes_nothing(server, upstream):
        response = person.post("/messages", data={"content": "hi", "conversation_id": conversation_id}, headers=HX)
        assert_fragment(response, 400)


@pytest.mark.parametrize("conversation_id, statuses", [("999999", (404,)), (HUGE, (404,)), ("-1", (400, 404))])
def test_an_unknown_conversation_id_is_a_404(server, upstream, person, conversation_id, statuses):
    with changes_nothing(server, upstream):
        response = person.post("/messages", data={"content": "hi", "conversation_id": conversation_id}, headers=HX)
        assert response.status_code in statuses, (response.status_code, response.text[:300])
        assert_fragment(response, response.status_code)


def test_an_unknown_model_is_a_400_naming_it(server, upstream, person):
    with changes_nothing(server, upstream):
        response = person.post("/messages", data={"content": "hi", "model": "gpt-9-ultra"}, headers=HX)
        assert "gpt-9-ultra" in assert_fragment(response, 400)
        response = person.post(f"/c/{person.conversation_id}/options", data={"model": "gpt-9-ultra"}, headers=HX)
        assert "gpt-9-ultra" in assert_fragment(response, 400)


def test_a_message_over_max_input_chars_is_a_413(server, upstream, person):
    with changes_nothing(server, upstream):
        response = person.post("/messages", data={"content": "x" * (MAX_INPUT_CHARS + 1)}, headers=HX)
        assert str(MAX_INPUT_CHARS) in assert_fragment(response, 413)
        response = person.post(
            f"/c/{person.conversation_id}/options",
            headers=HX,
            data={"system_prompt": "s" * (MAX_INPUT_CHARS + 1)},
        )
        assert_fragment(response, 413)


def test_an_oversize_form_is_a_413(server, upstream, person):
    with changes_nothing(server, upstream):
        for headers in (HX, {}):
            response = person.post(
                "/messages",
                data={"content": "x" * (MAX_CONTENT_LENGTH + 1)},
                headers=headers,
            )
            assert_readable(response, 413)
        response = person.post(
            "/messages",
            headers=HX,
            data={"content": "hi", "upload": (io.BytesIO(b"\0" * MAX_CONTENT_LENGTH * 2), "big.bin")},
        )
        assert_readable(response, 413)


def test_an_oversize_chunked_form_is_a_413_not_cut_short(served, upstream):
    """Without Content-Length the limit must still hold: the body is refused, not truncated and accepted."""
    body = b"content=short+question&padding=" + b"p" * MAX_CONTENT_LENGTH
    person = owner(served)
    with changes_nothing(served, upstream):
        response = person.post(served.url("/messages"), data=chunked(body), headers={**HX, **FORM}, timeout=10)
        assert_readable(response, 413)


NOT_UTF8 = {
    "raw bytes": (b"content=caf\xe9+\xff\xfe", FORM),
    "percent-encoded": (b"content=caf%E9+%FF%FE", FORM),
    "multipart": (
        b'--b\r\nContent-Disposition: form-data; name="content"\r\n\r\ncaf\xe9 \xff\xfe\r\n--b--\r\n',
        {"Content-Type": "multipart/form-data; boundary=b"},
    ),
}


@pytest.mark.parametrize("body, headers", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_a_form_that_is_not_utf8_is_a_400_and_stores_no_mangled_text(server, upstream, person, body, headers):
    with changes_nothing(server, upstream):
        response = person.post("/messages", data=body, headers={**HX, **headers})
        assert 400 <= response.status_code < 500, f"{response.status_code}: accepted as {response.text[:200]!r}"
        assert_fragment(response, response.status_code)


def test_a_nul_character_in_a_message_is_refused_or_removed(server, upstream, person):
    """PostgreSQL (DATABASE_URL) cannot store U+0000 in text: the app must not depend on SQLite accepting it."""
    settle(server)
    before = counts(server)
    response = person.post("/messages", data={"content": "before\x00after"}, headers=HX)
    if response.status_code == 200:
        found = re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text)
        wait_ended(server, int(found.group(1)))
        stored = rows(server, "SELECT content FROM messages WHERE id = :id", id=int(found.group(1)) - 1)[0][0]
        assert "\x00" not in stored, "a NUL character was stored: PostgreSQL refuses it (a 500 there)"
    else:
        assert_fragment(response, 400)
        assert counts(server) == before


def test_an_answer_with_a_nul_character_is_saved_without_it(server, upstream, person):
    """A provider may send U+0000; the answer must still be saved (PostgreSQL would refuse the row)."""
    upstream.push(Script(text="half\x00way there"))
    response = person.post("/messages", data={"content": "nul answer"}, headers=HX)
    assert response.status_code == 200
    answer = int(re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text).group(1))
    row = wait_ended(server, answer)
    assert row.status == "done" and row.content.replace("\x00", "").replace("\ufffd", "") == "halfway there"
    assert "\x00" not in row.content, "a NUL character was stored: PostgreSQL refuses it and the answer is lost there"


def test_malformed_multipart_is_a_400(server, upstream, person):
    with changes_nothing(server, upstream):
        for body in (b"--b\r\nnot a part", b"garbage", b""):
            response = person.post(
                "/messages",
                data=body,
                headers={**HX, "Content-Type": "multipart/form-data; boundary=b"},
            )
            assert_fragment(response, 400)


def test_bad_values_for_the_conversation_controls_are_4xx(server, upstream, person):
    cid, answer = person.conversation_id, person.answer_id
    with changes_nothing(server, upstream):
        assert_fragment(person.post(f"/c/{cid}/rename", data={"title": "  "}, headers=HX), 400)
        assert_fragment(person.post(f"/c/{cid}/rename", data={}, headers=HX), 400)
        assert_fragment(person.post(f"/messages/{answer - 1}/edit", data={"content": " "}, headers=HX), 400)
        # An id of the wrong kind: a question is not an answer, and an answer cannot be edited.
        for path in (
            f"/messages/{answer - 1}/retry",
            f"/messages/{answer - 1}/regenerate",
            f"/messages/{answer - 1}/activate",
        ):
            assert_fragment(person.post(path, headers=HX), 404)
        assert_fragment(person.post(f"/messages/{answer}/edit", data={"content": "x"}, headers=HX), 404)


# -- unknown ids -----------------------------------------------------------------------------------

UNKNOWN_GETS = [
    "/c/999999",
    "/c/999999/export.md",
    "/c/999999/export.json",
    "/c/1/export.exe",
    "/c/abc",
    "/c/-1",
    f"/c/{HUGE}",
    f"/c/{HUGE}/export.md",
    "/messages/999999/events",
    f"/messages/{HUGE}/events",
    "/messages/abc/events",
    "/nowhere",
]


@pytest.mark.parametrize("path", UNKNOWN_GETS)
def test_an_unknown_page_is_a_404_page(server, upstream, person, path):
    with changes_nothing(server, upstream):
        response = person.get(path)
        assert_readable(response, 404)
        assert "<html" in response.text and "text/event-stream" not in response.headers["Content-Type"]


UNKNOWN_POSTS = [
    "/messages/{id}/stop",
    "/messages/{id}/retry",
    "/messages/{id}/regenerate",
    "/messages/{id}/activate",
    "/messages/{id}/edit",
    "/c/{id}/rename",
    "/c/{id}/options",
    "/c/{id}/delete",
]


@pytest.mark.parametrize("unknown", ["999999", HUGE])
@pytest.mark.parametrize("pattern", UNKNOWN_POSTS)
def test_a_control_on_an_unknown_id_is_a_404(server, upstream, person, pattern, unknown):
    with changes_nothing(server, upstream):
        path = pattern.format(id=unknown)
        data = {"content": "x", "title": "x", "model": "fake-model"}
        assert_fragment(person.post(path, data=data, headers=HX), 404)
        response = person.post(path, data=data)
        assert_readable(response, 404)


def test_odd_cursors_on_an_events_stream_still_end_with_done(server, upstream, person):
    with changes_nothing(server, upstream):
        for query, headers in (
            ("?cursor=abc", {}),
            ("?cursor=-5", {}),
            (f"?cursor={HUGE}", {}),
            ("", {"Last-Event-ID": "nonsense"}),
            ("", {"Last-Event-ID": HUGE}),
        ):
            response = person.get(f"/messages/{person.answer_id}/events{query}", headers=headers, buffered=False)
            assert response.status_code == 200, (query, headers)
            assert b"event: done" in read_all(response), (query, headers)


# -- fuzzing ---------------------------------------------------------------------------------------


def read_all(response, limit: float = 20.0) -> bytes:
    """The whole (streamed) body, within `limit` seconds; a broken stream fails the test."""
    deadline = time.monotonic() + limit
    body = b""
    for chunk in sse.chunks_of(response):
        body += chunk
        assert time.monotonic() < deadline, f"the stream did not end within {limit} s: {body[-300:]!r}"
    return body


ODD = st.sampled_from(
    [
        "\x00",
        "\ud800",
        "\udfff",
        "\u2028",
        "\ufeff",
        "\u202e",
        "\U0001f600",
        "\r\n",
        "\\",
        '"',
        "<script>",
        "{{7*7}}",
        "%s",
        "data: [DONE]\n\n",
        "event: done\n",
    ]
)
TEXT = st.lists(st.one_of(st.characters(), ODD), max_size=20).map("".join)
SAFE_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)  # encodable as UTF-8
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
ANY_JSON = st.recursive(
    LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12
)
ROLE = st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "developer", "USER", ""]), ANY_JSON)
PART = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["text", "file", "reasoning"]), ANY_JSON),
        "text": st.one_of(TEXT, ANY_JSON),
        "url": TEXT,
    },
)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]), "content": TEXT}),
    st.fixed_dictionaries(
        {},
        optional={
            "role": ROLE,
            "content": st.one_of(TEXT, ANY_JSON),
            "id": TEXT,
            "parts": st.one_of(st.lists(PART, max_size=3), ANY_JSON),
        },
    ),
    ANY_JSON,
)
CHAT_BODY = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, min_size=1, max_size=4)},
        optional={
            "model": st.one_of(st.sampled_from(["fake-model", "fake-model-2", "", "nope"]), ANY_JSON),
            "id": TEXT,
            "trigger": TEXT,
            "messageId": TEXT,
        },
    ),
    st.fixed_dictionaries({}, optional={"messages": ANY_JSON, "model": ANY_JSON}),
    ANY_JSON,
)
# FUZZ_EXAMPLES=5000 for a long hunt; CI's 150 per run, fresh each time, add up over many runs.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(
    body=CHAT_BODY,
    protocol=st.sampled_from(["", "?protocol=json", "?protocol=ai-sdk", "?protocol=ai-sdk-data", "?protocol=x"]),
)
@example(body={"messages": [{"role": "user", "content": "half a pair \ud800"}]}, protocol="")
@example(body={"messages": [{"role": "user", "parts": [{"type": "text", "text": "\udfff"}]}]}, protocol="")
@example(body={"messages": [{"role": "user", "content": "hi"}], "model": "\ud800"}, protocol="")
@example(body={"messages": [{"role": "user", "content": "nul \x00"}], "model": 2**70}, protocol="?protocol=json")
@example(body="", protocol="?protocol=ai-sdk")
@example(body={"messages": [{"role": "user", "parts": "text"}]}, protocol="")
def test_random_json_at_api_chat_never_gets_a_5xx(server, upstream, body, protocol):
    upstream.default = Script(delay=0)
    data = json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes
    with stranger(server).post("/api/chat" + protocol, data=data, headers=JSON, buffered=False) as response:
        payload = read_all(response)  # and closed: an open stream counts against MAX_STREAMS_PER_IP
    assert response.status_code < 500, (response.status_code, payload[:500])
    assert b"Traceback" not in payload
    if response.status_code == 200 and "x-vercel-ai-data-stream" in response.headers:  # AI SDK 4's data stream
        assert payload.rstrip().rsplit(b"\n", 1)[-1].startswith(b'd:{"finishReason":'), payload[-300:]
    elif response.status_code == 200:
        assert payload.rstrip().endswith(b"data: [DONE]"), payload[-300:]
    else:
        assert 400 <= response.status_code < 500
        assert json.loads(payload)["error"]


FIELD_VALUE = st.one_of(SAFE_TEXT, st.integers().map(str), st.just(""))


@FUZZ
@given(
    content=st.one_of(SAFE_TEXT, st.text(max_size=MAX_INPUT_CHARS + 20), st.just(""), st.none()),
    conversation=st.one_of(
        st.none(),
        st.just("mine"),
        st.just(""),
        st.integers().map(str),
        SAFE_TEXT,
        st.sampled_from(["0", "-1", " 1 ", "1.0", HUGE]),
    ),
    model=st.one_of(st.none(), st.sampled_from(["fake-model", "fake-model-2", "", "nope"]), SAFE_TEXT),
    extra=st.dictionaries(
        SAFE_TEXT.filter(lambda k: k not in ("content", "conversation_id", "model", "csrf_token")),
        FIELD_VALUE,
        max_size=3,
    ),
    htmx=st.booleans(),
)
@example(content="hi", conversation=HUGE, model=None, extra={}, htmx=True)  # inputs known to be dangerous: always
@example(content="hi", conversation="9223372036854775808", model="fake-model-2", extra={}, htmx=False)
@example(content="\x00", conversation="mine", model=None, extra={"\x00": "\x00"}, htmx=True)
def test_random_form_fields_at_messages_never_get_a_5xx(
    server, upstream, person, content, conversation, model, extra, htmx
):
    upstream.default = Script(delay=0)
    data = dict(extra)
    if content is not None:
        data["content"] = content
    if conversation is not None:
        data["conversation_id"] = str(person.conversation_id) if conversation == "mine" else conversation
    if model is not None:
        data["model"] = model
    response = person.post("/messages", data=data, headers=HX if htmx else {})
    assert response.status_code < 500, (response.status_code, data, response.text[:500])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert_readable(response, response.status_code)
    if response.status_code == 200:
        found = re.search(r'id="message-(\d+)"[^>]*sse-connect', response.text)
        assert found, response.text[:500]
        with person.get(f"/messages/{found.group(1)}/events", buffered=False) as events:  # closed: its place
            assert events.status_code == 200  # among the owner's MAX_STREAMS_PER_OWNER open streams is freed
            assert b"event: done" in read_all(events)
        wait_ended(server, int(found.group(1)))


# Up to 1,980 levels (past the parser's recursion), under the module's 4 KB message limit (over it: close 1009).
DEEP = st.integers(min_value=1, max_value=660).map(lambda n: "[" * (n * 3) + "]" * (n * 3))
SOCKET_MESSAGE = st.one_of(
    CHAT_BODY.map(json.dumps),
    DEEP,
    DEEP.map(lambda deep: '{"messages": ' + deep + "}"),
    st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["chat", "cancel", "ping", "launch"]), ANY_JSON)}).map(
        json.dumps
    ),
    TEXT,
)


@FUZZ
@given(message=SOCKET_MESSAGE, binary=st.booleans())
@example(message="[" * 1990 + "]" * 1990, binary=False)
@example(message=json.dumps({"type": [[[[["deep"]]]]]}), binary=False)
@example(message=json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "a\r\nb"}), binary=True)
def test_random_messages_over_the_socket_never_close_it(served, upstream, message, binary):
    """The same generators as /api/chat's: every message gets events of the protocol, the socket stays open."""
    upstream.default = Script(delay=0)
    ws = connect(served, timeout=20)
    try:
        if binary:
            ws.send_binary(message.encode("utf-8", "surrogatepass"))
        else:
            ws.send(message.encode("utf-8", "replace").decode())  # a text frame must be UTF-8 (or the socket fails)
        ws.send(json.dumps({"type": "ping"}))
        for _ in range(1000):
            event = receive(ws)  # fails if the server closed the socket
            assert event["type"] in ("token", "status", "done", "error", "pong"), event
            if event["type"] == "error":
                assert isinstance(event["message"], str) and " " in event["message"], event
            if event["type"] == "pong":
                break
        else:
            pytest.fail("no pong after 1000 events")
    finally:
        ws.close()


PAGE_PATHS = [
    ("GET", "/c/{id}"),
    ("GET", "/c/{id}/export.md"),
    ("GET", "/c/{id}/export.json"),
    ("GET", "/messages/{id}/events"),
    ("GET", "/conversations"),
    ("GET", "/"),
    ("POST", "/messages/{id}/stop"),
    ("POST", "/messages/{id}/retry"),
    ("POST", "/messages/{id}/regenerate"),
    ("POST", "/messages/{id}/activate"),
    ("POST", "/messages/{id}/edit"),
    ("POST", "/c/{id}/rename"),
    ("POST", "/c/{id}/options"),
    ("POST", "/c/{id}/delete"),
]
# Latin-1 without control characters: what gunicorn passes on (it refuses the others itself, before the app).
# (requests itself refuses a value with leading whitespace.)
HEADER_TEXT = st.text(alphabet=st.characters(max_codepoint=255, exclude_categories=["Cc"]), max_size=60).map(str.lstrip)
PAGE_ID = st.one_of(
    st.sampled_from(["question", "answer", "conversation"]),  # the person's own
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.sampled_from([HUGE, "7" * 4000, "abc", "0", "1.5", "%00"]),
    SAFE_TEXT,
)


@FUZZ
@given(
    route=st.sampled_from(PAGE_PATHS),
    target=PAGE_ID,
    fields=st.dictionaries(
        st.sampled_from(["content", "title", "model", "system_prompt", "conversation_id", "q"])
        | SAFE_TEXT.filter(lambda k: k != "csrf_token"),
        st.one_of(FIELD_VALUE, st.text(max_size=MAX_INPUT_CHARS + 20), st.just(HUGE)),
        max_size=4,
    ),
    query=st.dictionaries(st.sampled_from(["q", "cursor", "protocol", "x"]), st.one_of(FIELD_VALUE, st.just(HUGE))),
    current_url=st.one_of(st.none(), HEADER_TEXT, st.just(f"/c/{HUGE}"), st.just("/c/" + "7" * 30)),
    last_event_id=st.one_of(st.none(), HEADER_TEXT, st.just(HUGE)),
    htmx=st.booleans(),
)
@example(
    route=("GET", "/conversations"),
    target="0",
    fields={},
    query={"q": "a"},
    current_url=f"http://x/c/{HUGE}",
    last_event_id=None,
    htmx=True,
)
@example(
    route=("GET", "/messages/{id}/events"),
    target="answer",
    fields={},
    query={"cursor": HUGE},
    current_url=None,
    last_event_id=HUGE,
    htmx=True,
)
def test_random_requests_at_the_page_endpoints_never_get_a_5xx(
    served, upstream, served_person, route, target, fields, query, current_url, last_event_id, htmx
):
    """Under gunicorn: the event streams among these endpoints stream for real."""
    server, person = served, served_person
    upstream.default = Script(delay=0)
    method, pattern = route
    own = {
        "question": person.answer_id - 1,
        "answer": person.answer_id,
        "conversation": person.conversation_id,
    }
    if target in own and pattern == "/c/{id}/delete":
        target = "999999"  # the person's conversation stays for the other tests
    path = pattern.format(id=own.get(target, quote(str(target), safe="")))
    headers = {**(HX if htmx else {})}
    if current_url is not None:
        headers["HX-Current-URL"] = current_url
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    if method == "GET":
        response = person.get(server.url(path), params=query, headers=headers, allow_redirects=False, timeout=(5, 20))
    else:
        response = person.post(
            server.url(path), params=query, data=fields, headers=headers, allow_redirects=False, timeout=(5, 30)
        )
    body = response.text
    assert response.status_code < 500 or response.status_code == 414, (response.status_code, path, body[:500])
    assert "Traceback" not in body
    if 400 <= response.status_code < 500 and response.status_code != 414:
        assert_readable(response, response.status_code)
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        assert "event: done" in body, body[-300:]
    settle(server)


def test_the_fuzzing_left_no_traceback_in_the_log(server, served):
    for log in (server.read_log(), served.read_log()):
        assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
