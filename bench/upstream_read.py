"""What reading the upstream costs, in this process: `python -m bench.upstream_read [--streams 200]`.

The relay's biggest share of CPU per token is reading the provider's stream (the openai client,
httpx, the SSE lines, the JSON of each event, the thought reader). This times that part alone:
OpenAICompatible.stream() against the bench's upstream, (1) one stream after another with the
tokens sent at once (the cost of a request: building it, the connection, the response head), and
(2) `--streams` at once with a token every 20 ms (the cost of a token that arrives alone, as from
a model). CPU of this process only; 127.0.0.1 only; bounded by `--streams` and the reply length.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as the app does: the streams below run on gevent's loop

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import Upstream  # noqa: E402
from trickle.openai_compatible import OpenAICompatible  # noqa: E402
from trickle.provider_choice import configured_endpoint  # noqa: E402
from trickle.settings import load_settings  # noqa: E402

QUESTION = [{"role": "user", "content": "Tell me about streaming."}]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def provider(upstream: Upstream) -> OpenAICompatible:
    settings = load_settings({"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "x"})
    return OpenAICompatible(configured_endpoint(settings), settings)


def read_all(chat: OpenAICompatible, streams: int) -> int:
    """Read `streams` answers at once; the deltas read."""
    counts = []

    def one() -> None:
        counts.append(sum(1 for _ in chat.stream(QUESTION, "bench")))

    gevent.joinall([gevent.spawn(one) for _ in range(streams)], timeout=120)
    return sum(counts)


def measure(tokens: int, interval_ms: float, streams: int, in_turn: bool) -> tuple[float, int]:
    """CPU seconds and deltas of reading `streams` answers (in turn, or all at once), after a warm-up."""
    with tempfile.TemporaryDirectory() as logs:
        upstream = Upstream(tokens, interval_ms, Path(logs)).start()
        try:
            chat = provider(upstream)
            read_all(chat, min(streams, 20))  # connections made, first-request costs paid
            started = cpu_seconds()
            deltas = sum(read_all(chat, 1) for _ in range(streams)) if in_turn else read_all(chat, streams)
            return cpu_seconds() - started, deltas
        finally:
            upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="answers read at once in the spaced run (default 200)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer (default 200)")
    args = parser.parse_args()
    burst_cpu, burst_deltas = measure(1, 0, 300, in_turn=True)
    spaced_cpu, spaced_deltas = measure(args.tokens, 20, args.streams, in_turn=False)
    print(f"a request (1-token answers, one after another): {burst_cpu / 300 * 1000:.2f} ms CPU each")
    print(
        f"a token arriving alone ({args.streams} answers at once, {args.tokens} tokens 20 ms apart): "
        f"{spaced_cpu / spaced_deltas * 1e6:.1f} µs CPU per delta read ({spaced_deltas} deltas)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
