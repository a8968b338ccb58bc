"""The in-process rate-limit counters: the same windows as limits' memory storage, a cheaper sweep."""

from __future__ import annotations

import threading
import time

from trickle.limits import limiter
from trickle.rate_counters import SWEEP_S, SweptMemoryStorage


def test_the_app_counts_in_process_with_the_swept_storage(app):
    with app.app.app_context():
        assert isinstance(limiter.limiter.storage, SweptMemoryStorage)


def test_a_thousand_hits_start_no_thread():
    counters = SweptMemoryStorage()
    counters.timer.join()  # the one sweep the parent's constructor starts
    threads = threading.active_count()
    for n in range(1000):
        counters.incr(f"owner:{n}", expiry=60)
    assert threading.active_count() == threads
    assert not counters.timer.is_alive()
    assert counters.get("owner:7") == 1


def test_the_first_hit_after_a_second_sweeps_the_ended_windows():
    counters = SweptMemoryStorage()
    counters.timer.join()
    counters.incr("owner:gone", expiry=0.01)
    time.sleep(0.02)
    counters.incr("owner:new", expiry=60)
    assert "owner:gone" in counters.storage  # within the second: left for the sweep
    counters.next_sweep = time.monotonic() - 0.001
    counters.incr("owner:new", expiry=60)
    assert "owner:gone" not in counters.storage and "owner:gone" not in counters.expirations
    assert counters.get("owner:new") == 2
    assert counters.next_sweep > time.monotonic() + SWEEP_S / 2


def test_a_window_that_ended_counts_from_zero_before_any_sweep():
    counters = SweptMemoryStorage()
    assert counters.incr("owner:a", expiry=0.05) == 1
    assert counters.incr("owner:a", expiry=0.05) == 2
    time.sleep(0.1)
    assert counters.get("owner:a") == 0
    assert counters.incr("owner:a", expiry=0.05) == 1
