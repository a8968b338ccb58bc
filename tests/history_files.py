"""Small synthetic history exports in the shapes Trickle imports (see trickle/importers.py for the
sources of each shape): a ChatGPT `conversations.json` with branches, an Open WebUI export."""

from __future__ import annotations

import json


def _chatgpt_node(node_id, parent, children, role=None, text=None, created=None, model=None, **message):
    node = {"id": node_id, "parent": parent, "children": children, "message": None}
    if role is not None:
        node["message"] = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": created,
            "update_time": None,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "end_turn": True,
            "weight": 1.0,
            "metadata": {"model_slug": model} if model else {},
            "recipient": "all",
            **message,
        }
    return node


def chatgpt_export() -> list[dict]:
    """Two conversations. The first has branches: a regenerated answer (the old one is off the current
    branch) and an edited second question (the first version and its answer are off it too), plus a
    hidden system message and a tool call, which are not shown in ChatGPT either."""
    branched = {
        "title": "Branches of a plan",
        "create_time": 1700000000.25,
        "update_time": 1700000900.5,
        "current_node": "a2b",
        "conversation_id": "c-1",
        "id": "c-1",
        "default_model_slug": "gpt-4o",
        "mapping": {
            "root": _chatgpt_node("root", None, ["sys"]),
            "sys": _chatgpt_node(
                "sys",
                "root",
                ["q1"],
                "system",
                "",
                1700000000.0,
                metadata={"is_visually_hidden_from_conversation": True},
            ),
            "q1": _chatgpt_node("q1", "sys", ["a1-old", "a1"], "user", "Plan a trip to Lisbon", 1700000001.0),
            "a1-old": _chatgpt_node(
                "a1-old", "q1", [], "assistant", "OLD ANSWER (regenerated away)", 1700000002.0, model="gpt-4"
            ),
            "a1": _chatgpt_node(
                "a1", "q1", ["q2-old", "q2"], "assistant", "Day 1: **Alfama**.", 1700000003.0, model="gpt-4o"
            ),
            "q2-old": _chatgpt_node("q2-old", "a1", ["a2-old"], "user", "FIRST VERSION of the question", 1700000004.0),
            "a2-old": _chatgpt_node("a2-old", "q2-old", [], "assistant", "ANSWER TO THE FIRST VERSION", 1700000005.0),
            "q2": _chatgpt_node("q2", "a1", ["tool"], "user", "And day 2?", 1700000006.0),
            "tool": _chatgpt_node(
                "tool", "q2", ["a2b"], "assistant", "search('Belem')", 1700000007.0, recipient="browser"
            ),
            "a2b": _chatgpt_node("a2b", "tool", [], "assistant", "Day 2: Belém.", 1700000008.0, model="gpt-4o"),
        },
    }
    plain = {
        "title": "Second chat",
        "create_time": 1710000000.0,
        "update_time": 1710000050.0,
        "current_node": "b",
        "mapping": {
            "a": _chatgpt_node("a", None, ["b"], "user", "Hello <b>there</b>", 1710000001.0),
            "b": _chatgpt_node("b", "a", [], "assistant", "Hi!", 1710000002.0, model="gpt-4o-mini"),
        },
    }
    return [branched, plain]


def open_webui_export() -> list[dict]:
    """One chat with a history tree (a regenerated answer off the current branch), one legacy chat with
    only a list of messages; times in seconds, as Open WebUI stores them."""
    tree = {
        "id": "owui-1",
        "user_id": "user-1",
        "title": "Open WebUI chat",
        "created_at": 1720000000,
        "updated_at": 1720000600,
        "share_id": None,
        "archived": False,
        "pinned": False,
        "meta": {},
        "folder_id": None,
        "chat": {
            "id": "",
            "title": "Open WebUI chat",
            "models": ["llama3.2:latest"],
            "params": {},
            "timestamp": 1720000000000,
            "history": {
                "currentId": "m3",
                "messages": {
                    "m1": {
                        "id": "m1",
                        "parentId": None,
                        "childrenIds": ["m2-old", "m2"],
                        "role": "user",
                        "content": "What is htmx?",
                        "timestamp": 1720000001,
                        "models": ["llama3.2:latest"],
                    },
                    "m2-old": {
                        "id": "m2-old",
                        "parentId": "m1",
                        "childrenIds": [],
                        "role": "assistant",
                        "content": "DISCARDED ANSWER",
                        "timestamp": 1720000002,
                        "model": "llama3.2:latest",
                    },
                    "m2": {
                        "id": "m2",
                        "parentId": "m1",
                        "childrenIds": ["m3"],
                        "role": "assistant",
                        "content": "A library for *hypermedia*.",
                        "timestamp": 1720000003,
                        "model": "llama3.2:latest",
                    },
                    "m3": {
                        "id": "m3",
                        "parentId": "m2",
                        "childrenIds": [],
                        "role": "user",
                        "content": "Thanks",
                        "timestamp": 1720000004,
                    },
                },
            },
            "messages": [],
            "tags": [],
        },
    }
    legacy = {
        "id": "owui-2",
        "title": "Legacy chat",
        "created_at": 1721000000,
        "updated_at": 1721000100,
        "chat": {
            "title": "Legacy chat",
            "messages": [
                {"id": "x", "role": "user", "content": "Old question", "timestamp": 1721000001},
                {"id": "y", "role": "assistant", "content": "Old answer", "timestamp": 1721000002, "model": "mistral"},
            ],
        },
    }
    return [tree, legacy]


def as_bytes(export) -> bytes:
    return json.dumps(export).encode()
