"""Reading a history file, streamed: a ChatGPT data export, an Open WebUI export or a Trickle export,
each turned into the plain conversation dicts `history_store.import_conversations` stores.

The file is parsed with ijson, one conversation at a time, so a large export is never held whole.
A file that is not what it claims raises `ImportProblem`, whose message says what is wrong and where.

The shapes read here:
- ChatGPT (`conversations.json` of Settings → Data controls → Export): an array of conversations,
  each `{title, create_time, update_time, current_node, mapping: {node id: {message, parent,
  children}}}`; a message is `{author: {role}, create_time, content: {content_type, parts},
  metadata: {model_slug}, recipient}`. The current branch is `current_node` and its parents.
- Open WebUI (Settings → Chats → Export): an array of `{title, created_at, updated_at, chat: {models,
  history: {currentId, messages: {id: {parentId, childrenIds, role, content, timestamp, model}}}}}`;
  older chats have only `chat.messages`, a list. The current branch is `currentId` and its parents.
- Trickle (Export all): `{"format": "trickle", "version": 1, "conversations": [...]}`, in the shape
  of `history_store`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

import ijson

from .status import Status

TRICKLE_FORMAT = "trickle"
TRICKLE_VERSION = 1
ROLES = ("user", "assistant")


class ImportProblem(ValueError):
    """The file cannot be imported; the message says why, in words the person who chose it reads."""


def read_history(stream: IO[bytes]) -> tuple[str, Iterator[dict]]:
    """The file's kind ("ChatGPT", "Open WebUI", "Trickle") and its conversations, read lazily."""
    if not stream.read(64).strip():
        raise ImportProblem("The file is empty.")
    stream.seek(0)
    kind = _top_level(stream)
    stream.seek(0)
    if kind == "start_map":
        _check_trickle_header(stream)
        stream.seek(0)
        return "Trickle", _converted(ijson.items(stream, "conversations.item", use_float=True), _trickle)
    if kind != "start_array":
        raise ImportProblem("This file is not a history export: it holds a single value, not a list of conversations.")
    items = ijson.items(stream, "item", use_float=True)
    first = _next(items)
    if first is None:
        return "empty", iter(())
    if isinstance(first, dict) and "mapping" in first:
        return "ChatGPT", _converted(_chain(first, items), _chatgpt)
    if isinstance(first, dict) and "chat" in first:
        return "Open WebUI", _converted(_chain(first, items), _open_webui)
    raise ImportProblem(
        "This list is not a known export: its first conversation has neither a ChatGPT message tree "
        "('mapping') nor an Open WebUI chat ('chat')."
    )


def _top_level(stream: IO[bytes]) -> str:
    events = ijson.parse(stream)
    try:
        _prefix, event, _value = next(events)
    except ijson.JSONError as err:
        raise _json_problem(err) from None
    return event


def _check_trickle_header(stream: IO[bytes]) -> None:
    """An object must say it is a Trickle export before its conversations (as Export all writes it)."""
    found = None
    try:
        for prefix, event, value in ijson.parse(stream):
            if prefix == "format" and event == "string":
                found = value
            if prefix == "" and event == "map_key" and value == "conversations" or prefix == "" and event == "end_map":
                break
    except ijson.JSONError as err:
        raise _json_problem(err) from None
    if found != TRICKLE_FORMAT:
        raise ImportProblem(
            'This file is not a Trickle export: it does not start with "format": "trickle" '
            "(ChatGPT and Open WebUI exports are lists of conversations)."
        )


def _next(items: Iterator):
    try:
        return next(items)
    except StopIteration:
        return None
    except ijson.JSONError as err:
        raise _json_problem(err) from None


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _converted(items: Iterator, convert: Callable[[dict, int], dict]) -> Iterator[dict]:
    number = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except ijson.JSONError as err:
            raise _json_problem(err, after=number) from None
        number += 1
        if not isinstance(item, dict):
            raise ImportProblem(f"Conversation {number} is not an object.")
        yield convert(item, number)


def _json_problem(err: Exception, after: int = 0) -> ImportProblem:
    where = f" after conversation {after}" if after else ""
    if isinstance(err, ijson.IncompleteJSONError) and "premature EOF" in str(err):
        return ImportProblem(f"The file ends in the middle of its JSON{where}: it looks truncated. Export it again.")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
    return ImportProblem(f"The file is not valid JSON{where} ({detail}).")


def seconds(value) -> float | None:
    """A Unix time in seconds, from seconds, milliseconds or nanoseconds (exports use all three)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    for scale in (1e18, 1e15, 1e12):
        if value >= scale:
            return value / (scale / 1e9)
    return float(value)


def _linked(found: list[dict]) -> list[dict]:
    """Each answer replies to the question before it (by position, as Trickle's export writes it)."""
    question = None
    for position, message in enumerate(found):
        if message["role"] == "user":
            question = position
        else:
            message["reply_to"] = question
    return found


def _title(value, number: int) -> str:
    return value.strip()[:200] if isinstance(value, str) and value.strip() else f"Imported chat {number}"


# -- ChatGPT ------------------------------------------------------------------------------------------


def _chatgpt(item: dict, number: int) -> dict:
    title = _title(item.get("title"), number)
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        raise ImportProblem(f"Conversation {number} ({title!r}) has no message tree ('mapping' is missing).")
    branch = _branch(mapping, item.get("current_node"), "parent", f"Conversation {number} ({title!r})")
    created = seconds(item.get("create_time"))
    found = []
    for node in branch:
        message = node.get("message") if isinstance(node, dict) else None
        text = _chatgpt_text(message) if isinstance(message, dict) else None
        if text:
            role = message["author"]["role"]
            model = (message.get("metadata") or {}).get("model_slug") if role == "assistant" else None
            when = seconds(message.get("create_time")) or created
            found.append({"role": role, "content": text, "model": model, "created_at": when})
    return {
        "title": title,
        "created_at": created,
        "updated_at": seconds(item.get("update_time")),
        "messages": _linked(found),
    }


def _chatgpt_text(message: dict) -> str | None:
    """The text of a message people saw: user and assistant turns, not tool calls, hidden context or
    reasoning (content types other than text)."""
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if role not in ROLES or metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.get("recipient", "all") != "all":
        return None
    content = message.get("content")
    if not isinstance(content, dict) or content.get("content_type") not in ("text", "multimodal_text"):
        return None
    parts = content.get("parts") if isinstance(content.get("parts"), list) else []
    text = "\n\n".join(part for part in parts if isinstance(part, str) and part.strip())
    return text.replace("\x00", "") or None


def _branch(nodes: dict, leaf, parent_key: str, where: str) -> list:
    """The nodes from the root to `leaf` by their parents: the branch the person was on."""
    if leaf is None or leaf not in nodes:
        raise ImportProblem(f"{where} does not say which branch is current, or names a message it lacks.")
    branch, seen = [], set()
    while leaf is not None:
        if leaf in seen:
            raise ImportProblem(f"{where} has a loop in its message tree.")
        seen.add(leaf)
        node = nodes.get(leaf)
        if not isinstance(node, dict):
            raise ImportProblem(f"{where} points at a message it does not hold ({str(leaf)[:60]!r}).")
        branch.append(node)
        leaf = node.get(parent_key)
    branch.reverse()
    return branch


# -- Open WebUI ---------------------------------------------------------------------------------------


def _open_webui(item: dict, number: int) -> dict:
    chat = item.get("chat")
    title = _title(item.get("title") or (chat.get("title") if isinstance(chat, dict) else None), number)
    if not isinstance(chat, dict):
        raise ImportProblem(f"Conversation {number} ({title!r}) has no chat in it ('chat' is not an object).")
    history = chat.get("history") if isinstance(chat.get("history"), dict) else {}
    tree = history.get("messages")
    where = f"Conversation {number} ({title!r})"
    if isinstance(tree, dict) and tree:
        listed = _branch(tree, history.get("currentId"), "parentId", where)
    elif isinstance(chat.get("messages"), list):
        listed = chat["messages"]
    else:
        raise ImportProblem(f"{where} has no messages ('chat.history.messages' is missing).")
    models = chat.get("models") if isinstance(chat.get("models"), list) else []
    created = seconds(item.get("created_at")) or seconds(chat.get("timestamp"))
    found = []
    for message in listed:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            continue
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        model = message.get("model") if message["role"] == "assistant" else None
        when = seconds(message.get("timestamp")) or created
        found.append(
            {"role": message["role"], "content": content.replace("\x00", ""), "model": model, "created_at": when}
        )
    return {
        "title": title,
        "model": models[0] if models and isinstance(models[0], str) else None,
        "created_at": created,
        "updated_at": seconds(item.get("updated_at")),
        "messages": _linked(found),
    }


# -- Trickle ------------------------------------------------------------------------------------------

_TEXT = (str, type(None))
_NUMBER = (int, float, type(None))
_CONVERSATION_TYPES = {
    "title": _TEXT,
    "model": _TEXT,
    "system_prompt": _TEXT,
    "created_at": _NUMBER,
    "updated_at": _NUMBER,
    "pinned_at": _NUMBER,
}
_MESSAGE_TYPES = {
    "content": _TEXT,
    "error": _TEXT,
    "model": _TEXT,
    "tokens_in": (int, type(None)),
    "tokens_out": (int, type(None)),
    "ttft_ms": (int, type(None)),
    "duration_ms": (int, type(None)),
    "cost": _NUMBER,
    "created_at": _NUMBER,
    "active": (bool, type(None)),
    "reply_to": (int, type(None)),
}
_STATUSES = {status.value for status in Status}


def _trickle(item: dict, number: int) -> dict:
    where = f"Conversation {number}"
    _check_types(item, _CONVERSATION_TYPES, where)
    found = item.get("messages")
    if not isinstance(found, list):
        raise ImportProblem(f"{where} has no list of messages ('messages').")
    for position, message in enumerate(found, start=1):
        here = f"{where}, message {position},"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ImportProblem(f"{here} needs a role of 'user' or 'assistant'.")
        _check_types(message, _MESSAGE_TYPES, here)
        if message.get("status") is not None and message["status"] not in _STATUSES:
            raise ImportProblem(f"{here} has an unknown status {str(message['status'])[:40]!r}.")
        _check_added(message.get("added"), here)
    return {**item, "title": _title(item.get("title"), number)}


def _check_added(added, where: str) -> None:
    """The context added to an answer: a list of {at: offset in its text, content: text}."""
    if added is None:
        return
    if not isinstance(added, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("at"), int)
        and not isinstance(a["at"], bool)
        and 0 <= a["at"] < 2**31
        and isinstance(a.get("content"), str)
        for a in added
    ):
        raise ImportProblem(f"{where} has an 'added' that is not a list of {{at, content}}.")


def _check_types(values: dict, types: dict, where: str) -> None:
    """Each field of the kind its column holds, and within what the column can store."""
    for name, allowed in types.items():
        value = values.get(name)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ImportProblem(f"{where} has a {name!r} of the wrong kind ({type(value).__name__}).")
        if isinstance(value, int) and float not in allowed and abs(value) >= 2**31:  # an INTEGER column
            raise ImportProblem(f"{where} has a {name!r} too large to store ({value}).")
        if name == "model" and isinstance(value, str) and len(value) > 200:
            raise ImportProblem(f"{where} has a model name longer than 200 characters.")
