"""Run generators of :class:`~napari_comir.core.progress.Progress` events in a worker thread.

Every long job of the widgets (inference, registration, fine-tuning, writing a slide) is a
generator that yields Progress events; :func:`run_job` runs it in a Qt worker thread (superqt's
``GeneratorWorker``, what napari's ``thread_worker`` builds) and delivers the events, the final
result and errors to callbacks in the GUI thread. There is no synchronous shortcut: tests click
the buttons and wait for the thread, as a person does.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable, Iterator

from napari.utils.notifications import show_error

from ..core.progress import Progress

_log = logging.getLogger(__name__)
#: Longest progress-bar headline shown whole; longer ones lose their middle.
HEADLINE_CHARS = 36


class JobState(enum.Enum):
    """Where a job is: the panels enable their buttons from this."""

    RUNNING = "running"
    STOPPING = "stopping"  # Stop pressed: ends after the event in progress
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class Job:
    """Handle of a job: ``quit()`` asks it to stop after the current event.

    Attributes
    ----------
    state : JobState
        Running, stopping, or how it ended.
    result : Any
        The last non-None ``Progress.result`` seen (e.g. the CoMIRs or the trained model).
    steps, total : int
        ``step`` and ``total`` of the last event seen.
    error : str
        The failure's message (empty unless failed).
    """

    def __init__(self, title: str = "napari-comir"):
        self.title = title
        self.state = JobState.RUNNING
        self.result = None
        self.steps = 0
        self.total = 0
        self.error = ""
        self.started = time.perf_counter()
        self._stage_starts: dict[str, tuple[int, float]] = {}  # stage: (first step, its time)
        self.seconds_per_step: float | None = None
        self._worker = None

    @property
    def running(self) -> bool:
        return self.state in (JobState.RUNNING, JobState.STOPPING)

    @property
    def failed(self) -> bool:
        return self.state is JobState.FAILED

    @property
    def stopped(self) -> bool:
        return self.state is JobState.STOPPED

    def quit(self) -> None:
        if self.state is JobState.RUNNING:
            self.state = JobState.STOPPING
            if self._worker is not None:
                self._worker.quit()

    def seconds_left(self) -> float | None:
        """Estimated seconds to the end of the current stage (None before two events)."""
        if self.seconds_per_step is None or not self.total:
            return None
        return max(0.0, (self.total - self.steps) * self.seconds_per_step)

    def _record(self, event: Progress) -> None:
        self.steps, self.total = event.step, event.total
        if event.result is not None:
            self.result = event.result
        # The rate of the event's own stage (training interleaves preview events, say).
        now = time.perf_counter()
        first_step, began = self._stage_starts.get(event.stage, (None, now))
        if first_step is None or event.step < first_step:
            self._stage_starts[event.stage] = (event.step, now)
            self.seconds_per_step = None
        elif event.step > first_step:
            self.seconds_per_step = (now - began) / (event.step - first_step)


def eta_text(job: Job) -> str:
    """"1.9 s/step · 40 s left" for a job measured so far; empty before that."""
    left = job.seconds_left()
    if left is None:
        return ""
    return f"{rate_text(job.seconds_per_step)} · {duration_text(left)} left"


def rate_text(seconds_per_step: float) -> str:
    """"1.9 s/step", or "12 steps/s" for fast steps."""
    if seconds_per_step >= 0.1:
        return f"{seconds_per_step:.2g} s/step"
    return f"{1 / max(seconds_per_step, 1e-9):.0f} steps/s"


def duration_text(seconds: float) -> str:
    """"40 s" or "2 min 5 s"."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def run_job(generator_function: Callable[..., Iterator[Progress]], *args,
            on_event: Callable[[Progress], None] | None = None,
            on_done: Callable[[Job], None] | None = None,
            progress_bar=None, title: str = "napari-comir", job: Job | None = None,
            **kwargs) -> Job:
    """Run ``generator_function(*args, **kwargs)`` in a worker thread; return its :class:`Job`.

    Parameters
    ----------
    generator_function : callable
        Returns an iterator of Progress events (a generator function, or a function returning a
        generator); it is called in the worker thread, so its setup never blocks the GUI.
    on_event : callable, optional
        Called in the GUI thread with every event.
    on_done : callable, optional
        Called in the GUI thread once at the end (finished, stopped or failed) with the Job.
    progress_bar : magicgui ProgressBar, optional
        Updated from each event's step/total, its text the event's headline.
    title : str
        Prefix of error notifications.
    job : Job, optional
        Handle to use (made if not given).
    """
    job = job if job is not None else Job(title)

    def handle(event: Progress) -> None:
        job._record(event)
        if progress_bar is not None:
            show_progress(progress_bar, event)
        if on_event is not None:
            on_event(event)

    def fail(exc: BaseException) -> None:
        # The state changes in finish: until then the job runs, so whoever waits for its end
        # sees its callbacks done (between "errored" and "finished" the dock still read
        # "registering…" while the job read failed).
        job.error = str(exc) or type(exc).__name__
        # The message of a ComirError is written for users; a traceback would only confuse them.
        _log.debug("%s failed", title, exc_info=exc)
        show_error(f"{title}: {job.error}")

    def finish() -> None:
        if job.error:
            job.state = JobState.FAILED
        elif job.state is JobState.STOPPING:
            job.state = JobState.STOPPED
        elif job.state is JobState.RUNNING:
            job.state = JobState.FINISHED
        if on_done is not None:
            on_done(job)

    running = []

    def events() -> Iterator[Progress]:
        # Always a generator function, so superqt makes a GeneratorWorker (with "yielded" and
        # quit), whatever callable was given.
        running.append(iter(generator_function(*args, **kwargs)))
        yield from running[0]

    from superqt.utils import create_worker

    worker = create_worker(events, _start_thread=False,
                           _connect={"yielded": handle, "errored": fail, "finished": finish})
    work = worker.work

    def work_then_close():
        try:
            return work()
        finally:
            # On quit superqt stops asking for events but leaves the generator open: closed
            # here, in the worker thread, what it cleans up on a Stop (a half-written file, its
            # writing thread) is gone before "finished" says the job stopped.
            if running:
                running[0].close()

    worker.work = work_then_close
    job._worker = worker
    worker.start()
    return job


def show_progress(progress_bar, event: Progress) -> None:
    """A magicgui ProgressBar at ``event``'s step of its total, its headline inside; busy (a
    moving bar) while the total is unknown (0) or a stage of one step runs (a large pair's
    overview sat at "0%" for seconds, as if stuck)."""
    busy = event.total <= 1 and event.step < event.total
    progress_bar.max = 0 if busy else event.total
    progress_bar.value = 0 if busy else min(event.step, event.total)
    progress_bar.native.setFormat(_headline(event.message))


def _headline(message: str) -> str:
    """Text inside a narrow progress bar: the message's first clause; if long (it would widen
    the dock), a path's middle cut (its file name stays), prose cut after a whole word (the
    full message is shown below the bar)."""
    headline = re.split(r"[,:;] | \(", message)[0].strip()
    if len(headline) > HEADLINE_CHARS:
        if "/" in headline or "\\" in headline:
            half = HEADLINE_CHARS // 2 - 1
            headline = f"{headline[:half]}…{headline[-half:]}"
        else:
            headline = headline[:HEADLINE_CHARS].rsplit(" ", 1)[0] + "…"
    return f"{headline}  %p%" if headline else "%p%"
