"""Run generators of :class:`~napari_comir.core.progress.Progress` events off the GUI thread.

Every long job of the widgets (inference, registration, fine-tuning) is a generator that yields
Progress events; :func:`run_job` runs it in a Qt worker thread and delivers the events, the final
result and errors to callbacks in the GUI thread. Set :data:`SYNCHRONOUS` (tests do) to run the
generator inline in the calling thread instead, which makes widget tests deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from napari.utils.notifications import show_error

from ..core.progress import Progress

#: Run jobs inline in the calling (GUI) thread; for tests and scripts, never for interactive use.
SYNCHRONOUS = False

_log = logging.getLogger(__name__)
#: Longest progress-bar headline shown whole; longer ones lose their middle.
HEADLINE_CHARS = 36


class Job:
    """Handle of a running job: ``quit()`` asks it to stop after the current event.

    Attributes
    ----------
    result : Any
        The last non-None ``Progress.result`` seen (e.g. the CoMIRs or the trained model).
    steps : int
        ``step`` of the last event seen.
    stopped : bool
        True when the job ended because of :meth:`quit`.
    """

    def __init__(self):
        self.result = None
        self.steps = 0
        self.stopped = False
        self.failed = False
        self.running = True
        self._quit_requested = False
        self._worker = None

    def quit(self) -> None:
        self._quit_requested = True
        if self._worker is not None:
            self._worker.quit()


def run_job(generator_function: Callable[..., Iterator[Progress]], *args,
            on_event: Callable[[Progress], None] | None = None,
            on_done: Callable[[Job], None] | None = None,
            progress_bar=None, title: str = "napari-comir", job: Job | None = None,
            **kwargs) -> Job:
    """Run ``generator_function(*args, **kwargs)`` in a worker thread (or inline when synchronous).

    Parameters
    ----------
    generator_function : callable
        A generator function: its body must run lazily so heavy setup happens in the worker.
    on_event : callable, optional
        Called in the GUI thread with every event.
    on_done : callable, optional
        Called in the GUI thread once at the end (finished, stopped or failed) with the Job.
    progress_bar : magicgui ProgressBar, optional
        Updated from each event's step/total.
    title : str
        Prefix of error notifications.
    job : Job, optional
        Handle to use; pass one created beforehand so a Stop button works while a synchronous
        job runs (the call only returns once it is over).
    """
    job = job if job is not None else Job()

    def handle(event: Progress) -> None:
        job.steps = event.step
        if event.result is not None:
            job.result = event.result
        if progress_bar is not None and event.total:
            progress_bar.max = event.total
            progress_bar.value = min(event.step, event.total)
            # Text inside the bar (the widget's label is its form-row name: leave it alone).
            headline = event.message.split(",")[0]  # the bar is narrow: details go to labels
            if len(headline) > HEADLINE_CHARS:  # a long one (a file's path) would widen the dock
                half = HEADLINE_CHARS // 2 - 1
                headline = f"{headline[:half]}…{headline[-half:]}"
            progress_bar.native.setFormat(f"{headline}  %p%" if headline else "%p%")
        if on_event is not None:
            on_event(event)

    def fail(exc: BaseException) -> None:
        job.failed = True
        # The message of a ComirError is written for users; a traceback would only confuse them.
        _log.debug("%s failed", title, exc_info=exc)
        show_error(f"{title}: {exc}")

    def finish() -> None:
        job.running = False
        job.stopped = job._quit_requested and not job.failed
        if on_done is not None:
            on_done(job)

    if SYNCHRONOUS:
        generator = generator_function(*args, **kwargs)
        try:
            for event in generator:
                handle(event)
                if job._quit_requested:
                    break
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into Qt
            fail(exc)
        finally:
            generator.close()  # like the thread worker: stopping closes the generator
            finish()
        return job

    # superqt's worker (napari's thread_worker minus its relay of tracebacks to the notification
    # manager): we connect "errored" ourselves so users get the message only.
    from superqt.utils import create_worker

    worker = create_worker(generator_function, *args, _start_thread=False, **kwargs,
                           _connect={"yielded": handle, "errored": fail, "finished": finish})
    job._worker = worker
    worker.start()
    return job
