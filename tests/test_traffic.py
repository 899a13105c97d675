"""Requests and errors since the last swap (what `fks rollout` watches on its canaries)."""

from __future__ import annotations

import threading

from subscriber.runtime.traffic import Traffic


def test_counts_start_again_at_every_swap_and_ignore_older_generations() -> None:
    """A request that used the model before the swap is not counted against the new one."""
    traffic = Traffic()
    traffic.swapped(1)
    traffic.served(1)
    traffic.served(1, error=True)
    assert traffic.snapshot() == (2, 1)
    traffic.swapped(2)
    assert traffic.snapshot() == (0, 0)
    traffic.served(1, error=True)  # began before the swap
    traffic.served(2)
    assert traffic.snapshot() == (1, 0)


def test_concurrent_requests_are_all_counted() -> None:
    """8 threads × 5,000 requests, every 10th an error: nothing lost."""
    traffic = Traffic()
    traffic.swapped(3)

    def hammer() -> None:
        for i in range(5000):
            traffic.served(3, error=i % 10 == 0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert traffic.snapshot() == (40000, 4000)
