"""How much of an image its landmarks cover, and the warning when an affine map fitted to them
must extrapolate over most of it."""

import numpy as np
import pytest

from napari_comir.core.registration.landmarks import MIN_COVERAGE, coverage_warning, landmark_coverage


@pytest.mark.parametrize(("points_xy", "coverage"), [
    ([[0, 0], [49.5, 0], [49.5, 49.5], [0, 49.5], [20, 20]], 0.25),  # a quarter; inner points add nothing
    ([[0, 0], [99, 0], [0, 99]], 0.49),
    ([[0, 0], [10, 10], [20, 20]], 0.0),  # on one line
    ([[5, 5], [60, 70]], 0.0),  # two points span no area
])
def test_coverage_is_the_hull_area_over_the_image(points_xy, coverage):
    assert landmark_coverage(points_xy, (99, 100)) == pytest.approx(coverage, abs=0.01)


def test_landmarks_in_one_corner_are_warned_about_and_spread_ones_are_not():
    corner = np.array([[261.4, 96.6], [294.8, 97.2], [318.7, 107.9], [385.0, 142.4], [287.4, 117.7],
                       [265.4, 51.6]])  # he_ihc's first six CD31 landmarks: the fit 61 px off
    warning = coverage_warning(corner, (660, 895))
    assert warning.startswith("the landmarks cover under 1% of the moving image")
    assert coverage_warning(corner * [3, 2.5], (660, 895)).startswith("the landmarks cover 5% of")
    spread = np.array([[100.0, 80.0], [800.0, 90.0], [760.0, 600.0], [120.0, 580.0]])
    assert landmark_coverage(spread, (660, 895)) > MIN_COVERAGE
    assert coverage_warning(spread, (660, 895)) is None
