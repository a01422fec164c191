"""Run a test's work in several threads at once and fail the test if any of them failed."""

from __future__ import annotations

import threading
from typing import Callable, List


def run_in_threads(work: Callable[[int], None], count: int = 8) -> None:
    """Run ``work(0)`` ... ``work(count - 1)``, each in its own thread, and wait for all.

    Args:
        work: the per-thread body; its argument is the thread's index (a seed, say).
        count: how many threads.

    Raises:
        AssertionError: some thread raised; the message is the first exception caught.
    """
    errors: List[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # surfaced in the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
