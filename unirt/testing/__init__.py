"""Helpers for testing unirt and backend plugins: model builders and the backend test-kit."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(worker: Callable[[int], None], count: int = 4) -> None:
    """Run ``worker(i)`` for ``i`` in ``range(count)`` on as many threads at once, then re-raise
    the first exception any of them raised (a failed assert in a thread is otherwise lost)."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            worker(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
