"""The default review view after Register, on a real raw H&E / SHG pair: readable, not washed out,
and a good registration looks different from a bad one."""

from __future__ import annotations

import numpy as np
import pytest

from napari_comir.core.transforms import AffineTransform
from napari_comir.widgets import _state
from napari_comir.widgets.register import RegisterWidget

pytestmark = pytest.mark.gui


def canvas_colours(viewer) -> np.ndarray:
    """The canvas as (N, 3) RGB pixels of the tissue (the middle half of the view)."""
    viewer.reset_view()
    image = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    rows, cols = image.shape[:2]
    return image[rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4].reshape(-1, 3)


def green_on_magenta(pixels: np.ndarray) -> float:
    """Fraction of the bright green (SHG) pixels that fall on the H&E's eosin (magenta): where
    the two agree the overlay turns white."""
    green = pixels[:, 1] > 80
    return float(np.mean(pixels[green, 0] > 80))


@pytest.fixture
def raw_viewer(make_napari_viewer, raw_cases):
    case = raw_cases["X01Y05"]
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders nothing
    _state.state_for(viewer).load("bf-shg", "cpu")
    viewer.window._qt_window.resize(1280, 800)
    viewer.add_image(case.fixed, name="SHG")
    viewer.add_image(case.moving, name="H&E", rgb=True)
    return viewer, case


def test_default_review_of_a_real_pair_is_readable(raw_viewer, errors, user):
    viewer, case = raw_viewer
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    user.click(widget.run_panel.register_button)
    user.wait_for_job(widget.session)
    result = widget.session.result
    assert case.error(result.transform) <= 3.0 and result.success_likely, errors
    good = canvas_colours(viewer)
    white = np.all(good >= 250, axis=1).mean()
    lit = good.max(axis=1) > 40
    assert white < 0.05, f"{white:.0%} of the canvas saturated white"
    assert 0.2 < lit.mean(), "the tissue is not visible"
    assert (good[:, 1] > good[:, 0] + 60).mean() > 0.005  # SHG (green) shows
    assert (good[:, 0] > good[:, 1] + 60).mean() > 0.05  # the H&E (magenta) shows

    # The same view with the moving image 15 px off: far more pixels of one colour alone.
    result.transform = AffineTransform.rigid(0.0, (15.0, 15.0)).compose(result.transform)
    widget.session.place_moving()
    bad = canvas_colours(viewer)
    assert green_on_magenta(good) > green_on_magenta(bad) + 0.05  # measured 0.59 vs 0.48
