"""Fixtures of the widget tests: a tiny saved model, small BF/SHG images, and what a person
clicking sees — jobs run in real worker threads; tests click and wait (:func:`click_and_wait`)
while :class:`EventLoopWatch` measures the longest stall of the GUI thread."""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest
from scipy import ndimage

from napari_comir import api
from napari_comir.widgets import _state, session

SIZE = 96


class EventLoopWatch:
    """Ticks in the GUI thread every :attr:`INTERVAL_MS`.

    ``longest_gap``: the longest wall time (s) between two ticks, how long the GUI was frozen;
    ``longest_busy``: the GUI thread's own CPU time within its longest stall — what the code on
    the GUI thread did, whatever else loads the machine (on an idle machine the two agree).
    """

    INTERVAL_MS = 20

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.reset()
        self._timer = QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def reset(self) -> None:
        """Measure from now on."""
        self.longest_gap = self.longest_busy = 0.0
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()

    def _tick(self):
        now, cpu = time.perf_counter(), time.thread_time()
        self.longest_gap = max(self.longest_gap, now - self._last)
        self.longest_busy = max(self.longest_busy, cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu

    def stop(self) -> float:
        self._timer.stop()
        return self.longest_gap

    def check(self, limit_s: float = 0.5) -> None:
        """Assert the GUI thread never worked ``limit_s`` without the event loop running, and
        never froze longer than that on a quiet machine. On a loaded one (more runnable
        processes than cores) the wall-time limit grows with the load: there 0.3 s of work
        takes over 1 s of wall time, whatever the code does."""
        assert self.longest_busy < limit_s, f"the GUI thread worked {self.longest_busy:.2f} s"
        oversubscribed = os.getloadavg()[0] / (os.cpu_count() or 1)
        wall_limit = limit_s * max(1.0, oversubscribed)
        assert self.longest_gap < wall_limit, (
            f"the GUI froze {self.longest_gap:.2f} s (limit {wall_limit:.2f} s at load "
            f"{os.getloadavg()[0]:.1f})")


#: Longest the GUI thread may work at a stretch on whole slides (s): software OpenGL (Xvfb's
#: llvmpipe) paints their textures on the GUI thread (profiled: napari's paint events; sampled
#: again in session 23, the stretch after a slide's Register is Qt's paint, 0.2 s of it Python,
#: and took 0.9-1.3 s from run to run on the same code on the 2-core machine).
SOFTWARE_PAINT_LIMIT_S = 1.5


class User:
    """A person at the GUI: clicks buttons and waits for jobs while the event loop runs, with an
    :class:`EventLoopWatch` measuring how long the GUI ever froze."""

    #: The GUI thread's longest stretch of work on whole slides: :data:`SOFTWARE_PAINT_LIMIT_S`.
    slide_paint_limit_s = SOFTWARE_PAINT_LIMIT_S

    def __init__(self, qtbot):
        self.qtbot = qtbot
        self.watch = EventLoopWatch()

    def click(self, button) -> None:
        """Click a magicgui PushButton (a mouse press and release on it)."""
        from qtpy.QtCore import Qt

        assert button.enabled, f"{button.text!r} is disabled"
        self.qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)

    def wait_for_job(self, session, timeout_s: float = 60.0):
        """Wait until the session's job has ended and its result is shown; return the job."""
        self.qtbot.waitUntil(lambda: session.job is not None and not session.busy,
                             timeout=int(timeout_s * 1000))
        return session.job

    def accept_slide(self, dock, path, errors, side: int):
        """Click the guided dock's slide Accept (output ``path``), wait for the pyramid to be
        written and opened, check it, and return the new layer."""
        keep = dock.keep_panel
        assert keep.accept_button.text == "Accept (save slide…)"
        keep.output_path = path
        self.watch.reset()
        self.click(keep.accept_button)
        job = self.wait_for_job(dock.session, 120)
        assert job.state.value == "finished", (job.error, errors)
        self.watch.check(self.slide_paint_limit_s)
        layer = dock.session.accepted
        assert path.is_file() and layer.name == "moving (registered)"
        assert layer.multiscale and len(layer.data) >= 2 and layer.rgb
        assert layer.data[0].shape[:2] == (side, side)
        return layer

    def wait_until(self, condition, timeout_s: float = 60.0) -> None:
        self.qtbot.waitUntil(condition, timeout=int(timeout_s * 1000))

    def wait(self, seconds: float) -> None:
        self.qtbot.wait(int(seconds * 1000))


@pytest.fixture(autouse=True)
def frozen_heap():
    """The objects left by earlier tests kept out of the garbage collector's full passes: in a
    process that has run eighty GUI tests those took 0.5-1.6 s each (~1 million objects on this
    2-core VM), a stall of the harness that :class:`EventLoopWatch` measured as the GUI
    freezing. What a test itself makes is still collected, and measured."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def user(qtbot):
    user = User(qtbot)
    yield user
    user.watch.stop()


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """A user-models folder holding one tiny untrained model "test-model", which every new
    viewer's state loads."""
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NAPARI_COMIR_SETTINGS", str(tmp_path / "settings.json"))
    import torch

    torch.manual_seed(0)
    api.save_user_model(api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4,
                                                              "depth": 2}), "test-model")
    monkeypatch.setattr(_state, "DEFAULT_MODEL_NAME", "test-model")  # what a new viewer loads
    monkeypatch.setattr(_state, "_STATES", {})
    monkeypatch.setattr(session, "_SESSIONS", {})
    yield tmp_path / "models"
    _state.library.models_saved.disconnect()


def _pair(shape=(SIZE, SIZE), seed=0):
    try:
        from napari_comir.core.synthetic import synthetic_pair

        return synthetic_pair(shape, seed)
    except ImportError:  # sample data not landed yet: blobs, stained in BF, bright in SHG
        rng = np.random.default_rng(seed)
        fibres = ndimage.gaussian_filter(rng.random(shape), 3)
        fibres = (fibres - fibres.min()) / np.ptp(fibres)
        shg = (255 * fibres**3).astype(np.uint8)
        bf = np.stack([255 - 120 * fibres, 255 - 200 * fibres, 255 - 90 * fibres], -1)
        return bf.astype(np.uint8), shg


@pytest.fixture
def pair():
    """(bf uint8 HxWx3, shg uint8 HxW), aligned."""
    return _pair()


@pytest.fixture
def viewer_with_pair(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    bf, shg = pair
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    return viewer


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by any widget module (instead of notifications)."""
    messages = []
    import napari_comir.widgets as package

    for name in ("_worker", "model", "representations", "fine_tune", "inspect", "_run_panel",
                 "_review_panel", "_keep_panel", "_landmarks_panel", "_teach_panel", "guided"):
        module = __import__(f"{package.__name__}.{name}", fromlist=["show_error"])
        monkeypatch.setattr(module, "show_error", messages.append)
    return messages



@pytest.fixture
def guided_dock_on_slides(make_napari_viewer):
    """``open_slides(folder)``: a viewer with the folder's fixed.ome.tif and moving.ome.tif
    opened by the plugin's reader (multiscale layers) and the guided dock set to register them
    with ``bf-shg``; returns (viewer, fixed layer, moving layer, dock)."""
    from napari_comir.widgets.guided import GuidedDock

    def open_slides(folder):
        viewer = make_napari_viewer()
        fixed = viewer.open(str(folder / "fixed.ome.tif"), plugin="napari-comir")[0]
        moving = viewer.open(str(folder / "moving.ome.tif"), plugin="napari-comir")[0]
        dock = GuidedDock(viewer)
        viewer.window.add_dock_widget(dock)
        dock.model_name.value = "bf-shg"
        dock.run_panel.fixed.value, dock.run_panel.moving.value = fixed, moving
        return viewer, fixed, moving, dock

    return open_slides
