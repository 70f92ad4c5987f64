import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.progress import Progress
from napari_comir.widgets import _worker

pytestmark = pytest.mark.gui


def _count(n, fail_at=None):
    for step in range(1, n + 1):
        if step == fail_at:
            raise InputError("bad input")
        yield Progress("test", step, n, result="done" if step == n else None)


def test_thread_mode_delivers_events_and_quits(qtbot, monkeypatch):
    monkeypatch.setattr(_worker, "SYNCHRONOUS", False)
    seen, finished = [], []
    job = _worker.run_job(_count, 3, on_event=seen.append, on_done=finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert [e.step for e in seen] == [1, 2, 3] and job.result == "done" and not job.stopped

    finished.clear()
    job = _worker.run_job(_count, 10**6, on_event=lambda e: e.step == 5 and job.quit(),
                          on_done=finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert job.stopped and job.steps < 10**6


def test_errors_become_messages(qtbot, monkeypatch, errors):
    job = _worker.run_job(_count, 5, 2, title="T")
    assert job.failed and errors == ["T: bad input"]
    monkeypatch.setattr(_worker, "SYNCHRONOUS", False)
    done = []
    _worker.run_job(_count, 5, 2, title="T", on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert errors == ["T: bad input"] * 2
