"""Timing: medians over rounds, with the cases of a comparison interleaved round by round.

Interleaving matters on a shared machine: a slow spell hits every case of a round alike, so
ratios between cases of one run stay meaningful even when absolute times drift.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable

Update = Callable[[Any], Any]


def _nothing() -> None:
    pass


def per_update(update: Update, keys: list[Any], write_back: Callable[[], Any] = _nothing) -> float:
    """Microseconds per call of ``update`` over ``keys``, with ``write_back`` timed too.

    The calls run in a worker thread, as telebot runs handlers (``threaded=True``, its
    default), unless ``update`` was marked with :func:`on_main_thread`.
    """
    result: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        for key in keys:
            update(key)
        write_back()
        result.append((time.perf_counter() - started) / len(keys) * 1e6)

    if getattr(update, "main_thread", False):
        run()
    else:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    return result[0]


def on_main_thread(update: Update) -> Update:
    """``update``, to be timed in the main thread (a script, a bot with threaded=False)."""

    def main(key: Any) -> Any:
        return update(key)

    main.main_thread = True  # type: ignore[attr-defined]
    return main


def interleaved(
    cases: dict[str, Update],
    keys: list[Any],
    rounds: int,
    write_back: Callable[[], Any] = _nothing,
) -> dict[str, float]:
    """Median microseconds per update of each case; one untimed round warms them up.

    ``write_back`` finishes work that the store defers (SQLite's checkpoint of its
    write-ahead log): it runs untimed before every round, so that each starts from the same
    state, and timed after it, so that each round pays for the writing it caused.
    """
    for update in cases.values():
        per_update(update, keys[: max(1, len(keys) // 10)])
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, update in cases.items():
            write_back()
            samples[name].append(per_update(update, keys, write_back))
    return {name: statistics.median(values) for name, values in samples.items()}


def threaded(update: Update, keys_per_thread: list[list[Any]]) -> float:
    """Microseconds of wall time per update with one thread per list of keys."""
    barrier = threading.Barrier(len(keys_per_thread) + 1)

    def work(keys: list[Any]) -> None:
        barrier.wait()
        for key in keys:
            update(key)

    threads = [threading.Thread(target=work, args=(keys,)) for keys in keys_per_thread]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    total = sum(len(keys) for keys in keys_per_thread)
    return (time.perf_counter() - started) / total * 1e6


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    """The median of ``rounds`` calls of ``measure``."""
    return statistics.median(measure() for _ in range(rounds))
