"""Work spread over threads, in order and in bounded memory (:func:`bounded_map`), and work on
a thread reported as it goes (:func:`reporting_thread`).

The pyramid writer's work (torch's and scipy's resampling, block means, zarr and imagecodecs
codecs) releases the GIL, so threads share it across cores without copying tiles between
processes.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import InputError

Item = TypeVar("Item")
Result = TypeVar("Result")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` threads, or all available cores for ``None``; at least one."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a whole number of threads ≥ 1, got {workers!r}")
    return workers


def bounded_map(function: Callable[[Item], Result], items: Iterable[Item],
                workers: int) -> Iterator[Result]:
    """``map(function, items)`` on ``workers`` threads, results in the items' order.

    At most twice ``workers`` items are in flight, so memory holds a few results whatever the
    number of items; with one worker it runs in the caller's thread. An exception in
    ``function`` is raised here, at its item, and the items not yet started are dropped.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(workers) as executor:
        pending = deque()
        try:
            for item in items:
                pending.append(executor.submit(function, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an error or a closed generator: start nothing more
            for future in pending:
                future.cancel()


class _Stopped(Exception):
    """Raised in a :func:`reporting_thread`'s work when its listener stopped listening."""


def reporting_thread(work: Callable[..., None]) -> Iterator[Item]:
    """Run ``work(report)`` on a thread and yield each item it reports, as it reports it.

    For work driven from inside a library call (tifffile pulling tiles from an iterator) that a
    generator cannot yield from. An exception in ``work`` is raised here; closing this
    generator (a Stop) makes the work's next ``report`` raise, and waits for the thread to end,
    so whatever the work cleans up on an error is cleaned up before this returns.
    ``report(item, confirm=True)`` also waits until the item is taken and the next one asked
    for: a step that must not happen after a Stop (a file taking its name) comes after it.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    finished = object()
    waiting: list[threading.Event] = []

    def report(item, confirm: bool = False) -> None:
        if stop.is_set():
            raise _Stopped("stopped")
        taken = threading.Event() if confirm else None
        events.put((item, taken))
        if taken is not None:
            waiting.append(taken)
            taken.wait()
            if stop.is_set():
                raise _Stopped("stopped")

    def run() -> None:
        try:
            work(report)
            events.put(finished)
        except BaseException as error:  # handed to the listener, which raises it
            events.put(error)

    thread = threading.Thread(target=run, name="napari-comir-writer", daemon=True)
    thread.start()
    try:
        while (entry := events.get()) is not finished:
            if isinstance(entry, BaseException):
                raise entry
            item, taken = entry
            yield item
            if taken is not None:
                taken.set()
    finally:
        stop.set()
        for taken in waiting:  # a report waiting for its confirmation learns of the Stop
            taken.set()
        thread.join()
