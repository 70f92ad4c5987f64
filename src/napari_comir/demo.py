"""The main job in one command: register the bundled sample pair, in napari or headless."""

from __future__ import annotations

import sys
import time

from .core.defaults import DEFAULT_MODEL_NAME, SUCCESS_FRACTION

# The guided dock alone: its steps in order, nothing clipped; the expert widgets are in the menu.
WIDGETS = ("CoMIR registration",)
#: Window size of ``demo --screenshot``: what a laptop screen shows.
SCREENSHOT_SIZE = (1280, 800)
#: Longest wait for the screenshot's registration (s).
SCREENSHOT_TIMEOUT_S = 120


def run_demo(headless: bool = False, model: str = DEFAULT_MODEL_NAME,
             screenshot: str | None = None) -> int:
    """Register the synthetic misaligned BF/SHG sample pair with ``model``.

    Headless: print the found and true transforms and the corner error. ``screenshot``: run the
    GUI main job end to end (open the pair, pick the model, register, the default review view)
    and save the whole window as a PNG there, then exit. Otherwise open napari with the sample
    pair and the plugin's dock widgets.
    """
    from .core.synthetic import misaligned_pair

    if screenshot is not None:
        return _screenshot(screenshot, model)
    if not headless:
        return _open_napari()
    from . import api
    from .core.transforms import corner_error

    start = time.perf_counter()
    bf_moved, shg, truth = misaligned_pair()
    result = api.register_multimodal(shg, bf_moved, model)
    error = corner_error(truth, result.transform, bf_moved.shape[:2])
    print(f"sample pair {shg.shape[1]}x{shg.shape[0]} px, model {model}")
    print(f"  true  : angle {truth.angle_deg:8.3f}°  translation (x, y) "
          f"({truth.translation_xy[0]:8.2f}, {truth.translation_xy[1]:8.2f}) px")
    print(f"  found : angle {result.transform.angle_deg:8.3f}°  translation (x, y) "
          f"({result.transform.translation_xy[0]:8.2f}, {result.transform.translation_xy[1]:8.2f}) px")
    print(f"  corner error {error:.2f} px, score {result.score:.3f} "
          f"({'confident' if result.success_likely else 'LOW confidence'}), "
          f"registration {result.seconds:.2f} s, total {time.perf_counter() - start:.2f} s")
    success = error <= SUCCESS_FRACTION * bf_moved.shape[1]
    print("  success" if success else "  FAILED: error above 2 % of the width")
    return 0 if success else 1


def setup_demo_viewer(viewer):
    """Open the misaligned sample pair in ``viewer`` sized for a laptop screen (1280 x 800 or
    the screen, if smaller) and dock the guided dock; return it."""
    from qtpy.QtWidgets import QApplication

    window = viewer.window._qt_window
    screen = QApplication.primaryScreen()
    available = screen.availableGeometry() if screen is not None else None
    width, height = SCREENSHOT_SIZE
    if available is not None:
        width, height = min(width, available.width()), min(height, available.height())
    window.resize(width, height)
    viewer.open_sample("napari-comir", "bf_shg_pair_misaligned")
    for name in WIDGETS:
        _, widget = viewer.window.add_plugin_dock_widget("napari-comir", name, tabify=True)
    return widget


def settle(seconds: float = 0.3) -> None:
    """Run the event loop a moment, then its pending events: a dock lays its rows out again
    only after a result's text grew, so a window grabbed at once shows them squashed."""
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    QApplication.processEvents()


def _screenshot(path: str, model: str) -> int:
    """Click Register in the guided dock as a person would (the job in its worker thread), wait
    for the result with the event loop running, then save the window."""
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from .core.io import atomic_path
    from .widgets._state import state_for

    with atomic_path(path if str(path).lower().endswith(".png") else f"{path}.png") as tmp:
        viewer = napari.Viewer(title="napari-comir demo", show=True)
        state_for(viewer).load(model)
        dock = setup_demo_viewer(viewer)
        viewer.window._qt_window.resize(*SCREENSHOT_SIZE)
        dock.run_panel.register_button.native.click()
        loop, timer = QEventLoop(), QTimer()
        timer.timeout.connect(lambda: dock.session.busy or loop.quit())
        timer.start(50)
        QTimer.singleShot(int(SCREENSHOT_TIMEOUT_S * 1000), loop.quit)
        loop.exec()
        timer.stop()
        result = dock.session.result
        settle()
        saved = viewer.window._qt_window.grab().save(str(tmp), "PNG")
        viewer.close()
    if not saved or result is None:
        print("napari-comir demo: error: the registration or the screenshot failed", file=sys.stderr)
        return 2
    print(f"wrote {path}: score {result.score:.2f}, "
          f"{'likely right' if result.success_likely else 'probably wrong'}")
    return 0


def _open_napari() -> int:
    import napari

    setup_demo_viewer(napari.Viewer(title="napari-comir demo"))
    napari.run()
    return 0
