"""The reference Express example's browser client, run as is in Chromium against `/api/chat`.

That client decodes each read on its own and splits it on newlines, so it only
works if every `data:` event reaches it whole: Trickle writes whole events per
flush, and these tests hold it to that.
"""

from __future__ import annotations

from tests.fake_upstream import Script

# The reference's client code, with `appendToChat` collecting the text and `messages` passed in.
REFERENCE_CLIENT = """
async (messages) => {
  let chat = '';
  const appendToChat = (content) => { chat += content; };

  const response = await fetch('/api/chat', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ messages }) });
  const reader = response.body.getReader(); const decoder = new TextDecoder();
  while (true) { const { done, value } = await reader.read(); if (done) break;
    const lines = decoder.decode(value).split('\\n').filter(l => l.startsWith('data: '));
    for (const line of lines) { const data = line.slice(6); if (data === '[DONE]') break; appendToChat(JSON.parse(data).content); } }

  return chat;
}
"""  # noqa: E501 (the reference's lines, verbatim)

HI = [{"role": "user", "content": "hi"}]


def test_reference_client_receives_the_full_text_exactly(page, shared_server, upstream):
    reply = (
        "The reference client reads this: ünïcödé, emoji 🎉👩‍💻, CJK 漢字, quotes \"x\" and 'y', "
        "back\\slashes, newlines\n\nand\r\n<b>tags</b> & entities &amp;. "
    ) * 30
    upstream.push(Script(text=reply, delay=0.001))
    page.goto(shared_server.url("/"))
    assert page.evaluate(REFERENCE_CLIENT, HI) == reply


def test_reference_client_with_a_burst_of_tiny_four_byte_tokens(page, shared_server, upstream):
    tokens = [chr(0x1F600 + n % 50) + str(n) + " " for n in range(1500)]  # 4-byte UTF-8 in every event
    upstream.push(Script(tokens=tokens, delay=0))
    page.goto(shared_server.url("/"))
    assert page.evaluate(REFERENCE_CLIENT, HI) == "".join(tokens)


def test_reference_client_sends_its_messages(page, shared_server, upstream):
    page.goto(shared_server.url("/"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping from Chromium?"}]
    assert page.evaluate(REFERENCE_CLIENT, messages) == "Echo: Ping from Chromium?"
    assert upstream.requests[-1]["body"]["messages"] == messages
