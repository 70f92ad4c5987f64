import pytest

from napari_comir.demo import WIDGETS, setup_demo_viewer


@pytest.mark.gui
def test_demo_opens_sample_pair_with_widgets_docked(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    setup_demo_viewer(viewer)
    size = viewer.window._qt_window.size()
    assert (size.width(), size.height()) == (1280, 800)  # a usable canvas, not 853 x 750
    assert {"SHG (sample)", "BF (sample, misaligned)"} <= {layer.name for layer in viewer.layers}
    docked = " ".join(viewer.window.dock_widgets)
    assert all(name in docked for name in WIDGETS)


@pytest.mark.gui
def test_demo_screenshot_shows_a_readable_registration(tmp_path, monkeypatch, qapp):
    """`napari-comir demo --screenshot`: Register clicked, the job in its worker thread, the whole
    window saved once the result shows, its dock laid out (no row squashed below its height, none
    cut off at its right edge);
    its canvas (the review overlay) is neither washed out nor empty."""
    import numpy as np
    from napari._qt.qt_main_window import _QtMainWindow
    from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QScrollArea, QSlider
    from skimage import io

    from napari_comir.cli import main
    from napari_comir.widgets._docking import MARK

    squashed = []
    grab = _QtMainWindow.grab

    def grab_checking_the_dock(window, *args):
        docks = [scroll for scroll in window.findChildren(QScrollArea) if scroll.property(MARK)]
        assert docks
        for scroll in docks:
            if scroll.horizontalScrollBar().isVisible():  # rows wider than the dock: cut off
                squashed.append(f"dock {scroll.widget().minimumSizeHint().width()} px wide in "
                                f"{scroll.viewport().width()}")
            for child in scroll.widget().findChildren((QComboBox, QLabel, QPushButton, QSlider)):
                if child.isVisible() and child.height() < child.minimumSizeHint().height():
                    squashed.append(f"{type(child).__name__} {child.height()} px")
        return grab(window, *args)

    monkeypatch.setattr(_QtMainWindow, "grab", grab_checking_the_dock)
    path = tmp_path / "demo.png"
    assert main(["demo", "--screenshot", str(path)]) == 0
    assert not squashed, squashed
    window = io.imread(path)[..., :3].astype(float)
    assert window.shape[:2] == (800, 1280)
    canvas = window[200:600, 450:800].reshape(-1, 3)  # the middle of the canvas: tissue
    assert np.all(canvas >= 250, axis=1).mean() < 0.05  # not washed out
    # not black either: the structure view lights the fibres, not the space between them
    assert (canvas.max(axis=1) > 40).mean() > 0.2
    # the BF shows: red is lit by the magenta layer alone (white where it meets the green SHG)
    assert (canvas[:, 0] > 60).mean() > 0.05
