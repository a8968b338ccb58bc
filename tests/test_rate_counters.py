"""The in-process rate-limit counters: the same windows as limits' memory storage, a cheaper sweep."""

from __future__ import annotations

import time

from trickle.limits import limiter
from trickle.rate_counters import SWEEP_S, SweptMemoryStorage


def test_the_app_counts_in_process_with_the_swept_storage(app):
    with app.app.app_context():
        assert isinstance(limiter.limiter.storage, SweptMemoryStorage)


def test_a_thousand_keys_hit_at_once_leave_one_sweep_a_second_pending():
    counters = SweptMemoryStorage()
    counters.timer.join()  # the one sweep its constructor starts
    for n in range(1000):
        counters.incr(f"owner:{n}", expiry=60)
    assert counters.timer.is_alive()
    assert counters.timer.interval == SWEEP_S  # the parent's hook is ours: its own timer waits 10 ms
    first = counters.timer
    counters.incr("owner:again", expiry=60)
    assert counters.timer is first  # no new thread while one is pending
    assert counters.get("owner:7") == 1


def test_a_window_that_ended_counts_from_zero_before_any_sweep():
    counters = SweptMemoryStorage()
    assert counters.incr("owner:a", expiry=0.05) == 1
    assert counters.incr("owner:a", expiry=0.05) == 2
    time.sleep(0.1)
    assert counters.get("owner:a") == 0
    assert counters.incr("owner:a", expiry=0.05) == 1
