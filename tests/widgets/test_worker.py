import time

import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.progress import Progress
from napari_comir.widgets import _worker

pytestmark = pytest.mark.gui


def _count(n, fail_at=None, pause=0.0):
    for step in range(1, n + 1):
        if step == fail_at:
            raise InputError("bad input")
        time.sleep(pause)
        yield Progress("test", step, n, result="done" if step == n else None)


def test_events_arrive_in_the_gui_thread_and_quit_stops(qtbot):
    import threading

    seen, finished, threads = [], [], []
    job = _worker.run_job(_count, 3, on_event=lambda e: (seen.append(e), threads.append(
        threading.current_thread())), on_done=finished.append)
    assert job.running  # returned at once: the work is in another thread
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert [e.step for e in seen] == [1, 2, 3] and job.result == "done"
    assert job.state is _worker.JobState.FINISHED
    assert set(threads) == {threading.main_thread()}

    finished.clear()
    job = _worker.run_job(_count, 10**6, on_event=lambda e: e.step == 5 and job.quit(),
                          on_done=finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert job.stopped and job.steps < 10**6


def test_a_plain_function_returning_a_generator_runs_too(qtbot):
    """The path that froze the GUI: ``lambda: events`` made a worker without "yielded"."""
    events = _count(3)
    done = []
    job = _worker.run_job(lambda: events, on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert job.state is _worker.JobState.FINISHED and job.result == "done"


def test_errors_become_messages(qtbot, errors, monkeypatch):
    """A failed job still runs until its end callbacks have run: a test or a panel waiting for
    it to stop running saw it failed while the dock still read "registering…"."""
    done, running_at_error = [], []
    real_show_error = _worker.show_error

    def show_error(message):
        running_at_error.append(job.running)
        real_show_error(message)

    monkeypatch.setattr(_worker, "show_error", show_error)
    job = _worker.run_job(_count, 5, 2, title="T", on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert job.failed and job.error == "bad input" and errors == ["T: bad input"]
    assert running_at_error == [True]


def test_rate_and_time_left(qtbot):
    done = []
    job = _worker.run_job(_count, 6, pause=0.05, on_done=done.append)
    qtbot.waitUntil(lambda: job.steps >= 3, timeout=5000)
    assert 0.02 < job.seconds_per_step < 1.0 and "left" in _worker.eta_text(job)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)


def test_the_progress_headline_fits_the_bar_and_reads():
    """The first clause; prose cut after a whole word, a path in the middle (its file name
    stays)."""
    assert _worker._headline("registering a large pair: an overview search, then windows") == \
        "registering a large pair  %p%"
    prose = _worker._headline("refining the affine result with a displacement field, on a level")
    assert prose == "refining the affine result with a…  %p%"
    path = _worker._headline("wrote /tmp/a/very/long/folder/name/moving_registered.ome.tif (2 levels)")
    assert path.startswith("wrote /tmp/") and path.endswith("egistered.ome.tif  %p%")
    assert len(path) <= _worker.HEADLINE_CHARS + len("  %p%")


def test_a_stage_of_one_step_shows_a_busy_bar_not_zero_percent(qtbot):
    """"registering a large pair 0%" for the whole overview read as stuck: a running stage of
    one step moves (busy); counted stages show their share; a finished one is full."""
    from magicgui.widgets import ProgressBar

    bar = ProgressBar(value=0, max=1)
    _worker.show_progress(bar, Progress("register", 0, 1, "registering a large pair"))
    assert bar.max == 0  # Qt's busy bar
    _worker.show_progress(bar, Progress("infer", 2, 8, "fixed: tile 2/8"))
    assert (bar.value, bar.max) == (2, 8)
    _worker.show_progress(bar, Progress("register", 1, 1, "done"))
    assert (bar.value, bar.max) == (1, 1)


def test_work_put_off_in_turns_lets_the_event_loop_run_between_its_steps(user):
    """The review layers are added one per turn of the event loop so that the GUI never works
    for their sum: zero-delay single shots ran back to back, timers waiting behind them."""
    import time

    from napari_comir.widgets.session import _in_turns

    done = []

    def step():
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
        done.append(step)

    user.watch.reset()
    _in_turns(step, step, step)
    user.wait_until(lambda: len(done) == 3)
    assert user.watch.longest_busy < 0.35
