"""Layers carried between the moving and the fixed grid, both ways (widgets._apply)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_comir.core.registration import RegistrationResult
from napari_comir.core.transforms import AffineTransform
from napari_comir.widgets._apply import DIRECTIONS, apply_to_layer
from napari_comir.widgets.register import RegisterWidget

pytestmark = pytest.mark.gui

KNOWN = AffineTransform.about_center(20.0, (47.5, 47.5), (5.0, -3.0), scale=1.1)


@pytest.fixture
def scaled_pair(viewer_with_pair):
    """The BF/SHG pair with µm scales and an offset, so layer data != pixels."""
    viewer = viewer_with_pair
    viewer.layers["BF"].scale = (0.5, 0.5)
    viewer.layers["SHG"].scale = (0.25, 0.25)
    viewer.layers["SHG"].translate = (3.0, -2.0)
    return viewer, viewer.layers["SHG"], viewer.layers["BF"]


def pixels(layer, data_rc):
    """Layer data (row, col) -> pixels of a layer with scale and translate."""
    return (np.asarray(data_rc) - np.asarray(layer.translate)) / np.asarray(layer.scale)


def test_points_forward_and_back_keep_features(scaled_pair):
    viewer, fixed, moving = scaled_pair
    moving_rc = np.array([[10.0, 20.0], [50.0, 60.0], [80.0, 5.0]])
    points = viewer.add_points(moving_rc * 0.5, name="cells", scale=(1, 1),
                               features=pd.DataFrame({"kind": ["a", "b", "c"]}))
    forward = apply_to_layer(viewer, points, KNOWN, fixed, moving)
    assert forward.name == "cells (registered)"
    assert np.allclose(forward.scale, fixed.scale) and np.allclose(forward.translate, fixed.translate)
    assert np.allclose(forward.data, KNOWN.apply_rc(moving_rc))  # fixed pixels, on its grid
    assert list(forward.features["kind"]) == ["a", "b", "c"]
    # Back: the carried layer is in the fixed frame (data = fixed pixels on the fixed grid).
    back = apply_to_layer(viewer, forward, KNOWN, fixed, moving, inverse=True)
    assert back.name == "cells (registered) (on BF)" and back.metadata["comir_direction"] == \
        "fixed → moving"
    assert np.allclose(back.data, moving_rc, atol=1e-9)
    assert list(back.features["kind"]) == ["a", "b", "c"]


def test_fixed_frame_points_and_shapes_go_to_the_moving_grid(scaled_pair):
    viewer, fixed, moving = scaled_pair
    world = np.array([[5.0, 6.0], [20.0, 12.0], [14.0, 22.0]])  # drawn over the SHG, in µm
    points = viewer.add_points(world, name="SHG cells")
    shapes = viewer.add_shapes([world], shape_type="polygon", name="SHG roi")
    expected = KNOWN.inverse().apply_rc(pixels(fixed, world))
    new_points = apply_to_layer(viewer, points, KNOWN, fixed, moving, inverse=True)
    new_shapes = apply_to_layer(viewer, shapes, KNOWN, fixed, moving, inverse=True)
    assert np.allclose(new_points.data, expected)
    assert np.allclose(new_shapes.data[0], expected)
    assert np.allclose(new_shapes.scale, moving.scale)


def test_labels_keep_their_values_both_ways(scaled_pair):
    viewer, fixed, moving = scaled_pair
    labels = np.zeros((96, 96), np.int32)
    labels[20:45, 30:60] = 7
    labels[60:80, 10:30] = 300
    moving_labels = viewer.add_labels(labels, name="nuclei", scale=moving.scale)
    forward = apply_to_layer(viewer, moving_labels, KNOWN, fixed, moving)
    assert forward.data.dtype == labels.dtype and forward.data.shape == fixed.data.shape
    assert set(np.unique(forward.data)) == {0, 7, 300}  # nearest neighbour: no blended labels
    back = apply_to_layer(viewer, forward, KNOWN, fixed, moving, inverse=True)
    assert set(np.unique(back.data)) <= {0, 7, 300}
    inside = (labels == 7) & (back.data != 0)  # away from the edges the round trip is exact
    assert (back.data[inside] == 7).all() and inside.sum() > 0.8 * (labels == 7).sum()


def test_a_labels_layer_at_another_scale_lands_where_it_is_shown(scaled_pair):
    """A half-resolution mask (scale twice the moving image's) is carried through its own grid."""
    viewer, fixed, moving = scaled_pair
    full = np.zeros((96, 96), np.uint8)
    full[20:60, 30:70] = 1
    half = viewer.add_labels(full[::2, ::2], name="mask", scale=(1.0, 1.0),
                             translate=(0.25, 0.25))  # pixel (i, j) covers moving 2i..2i+1
    reference = viewer.add_labels(full, name="mask full", scale=moving.scale)
    a = apply_to_layer(viewer, half, KNOWN, fixed, moving).data
    b = apply_to_layer(viewer, reference, KNOWN, fixed, moving).data
    assert np.mean(a != b) < 0.02


def test_register_widget_direction_choice(viewer_with_pair, errors, user):
    from napari_comir.widgets import _review

    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    session, keep = widget.session, widget.keep_panel
    rc = np.array([[10.0, 20.0], [50.0, 60.0]])
    points = viewer.add_points(rc, name="marks")  # made before registering: on the pixels
    session.show_result(RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True), fixed, moving,
                        _review.review_images(fixed, moving))
    user.wait_until(lambda: session.result is not None and not session.busy)
    assert list(keep.direction.choices) == list(DIRECTIONS)
    assert keep.direction.value == "moving → fixed"
    (forward,) = keep.apply_to([points])
    assert np.allclose(forward.data, KNOWN.apply_rc(rc))
    keep.direction.value = "fixed → moving"
    (backward,) = keep.apply_to([points])
    assert backward.name == "marks (on BF)"
    assert np.allclose(backward.data, KNOWN.inverse().apply_rc(rc))
    # Shown on the moving image as it is shown: placed by the result, over the marks they came
    # from (they were shown on the moving image's own grid, off the tissue they marked), and
    # moving with it for "before".
    shown = np.array([backward.data_to_world(point) for point in backward.data])
    assert np.allclose(shown, rc, atol=1e-6)
    widget.review_panel.after.value = False
    assert np.allclose(backward.affine.affine_matrix, np.eye(3))
    widget.review_panel.after.value = True
    assert np.allclose(backward.affine.affine_matrix, moving.affine.affine_matrix)
    user.click(keep.accept_button)  # always the moving image onto the fixed grid
    user.wait_for_job(session)
    assert session.accepted.name == "BF (registered)" and not errors


def test_the_layers_to_apply_to_are_cleared_for_another_pair(viewer_with_pair, user):
    """Chosen under 'apply to' for one pair, layers stayed chosen when another pair was
    registered: one click would have carried the first pair's landmarks through the second's
    result. A new result of the same pair keeps them."""
    from napari_comir.widgets import _review

    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    other = viewer.add_image(moving.data.copy(), name="BF 2", rgb=True)
    session, keep = widget.session, widget.keep_panel
    marks = viewer.add_points(np.array([[10.0, 20.0]]), name="marks")

    def show(pair):
        session.show_result(RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True), *pair,
                            _review.review_images(*pair))
        user.wait_until(lambda: session.result_pair == pair and not session.busy)

    show((fixed, moving))
    keep.targets.value = [marks]
    show((fixed, moving))  # registered again: still the same pair's layers
    assert keep.targets.value == [marks]
    show((fixed, other))
    assert keep.targets.value == []


def test_applying_again_replaces_the_earlier_result_not_a_users_layer(viewer_with_pair, errors, user):
    from napari_comir.widgets import _review

    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    session, keep = widget.session, widget.keep_panel
    marks = viewer.add_points(np.array([[10.0, 20.0], [50.0, 60.0]]), name="marks")
    cells = viewer.add_points(np.array([[30.0, 30.0]]), name="cells")
    mine = viewer.add_points(np.array([[1.0, 1.0]]), name="cells (registered)")  # the user's own
    session.show_result(RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True), fixed, moving,
                        _review.review_images(fixed, moving))
    user.wait_until(lambda: session.result is not None and not session.busy)
    keep.targets.value = [marks, cells]
    user.click(keep.apply_button)
    first = viewer.layers["marks (registered)"]
    assert keep.status.value.startswith("✓ added 'marks (registered)'")
    index = viewer.layers.index(first)
    first.opacity, first.blending = 0.4, "additive"  # how the person chose to see it
    marks.data = np.array([[12.0, 22.0]])  # edited, then applied again
    keep.targets.value = [marks]
    user.click(keep.apply_button)
    names = [layer.name for layer in viewer.layers]
    assert names.count("marks (registered)") == 1 and "marks (registered) [1]" not in names
    again = viewer.layers["marks (registered)"]
    assert again is not first and viewer.layers.index(again) == index
    assert (again.opacity, again.blending) == (0.4, "additive")  # still as the person set it
    assert np.allclose(again.data, KNOWN.apply_rc(np.array([[12.0, 22.0]])))
    assert keep.status.value == "✓ updated 'marks (registered)'"
    # A user's layer that happens to bear the name is never replaced.
    assert mine in viewer.layers and np.allclose(mine.data, [[1.0, 1.0]])
    assert "cells (registered) [1]" in names
    # An image carried again keeps its colours too.
    stain = viewer.add_image(np.random.default_rng(0).random((64, 64)), name="stain")
    keep.targets.value = [stain]
    user.click(keep.apply_button)
    user.wait_until(lambda: "stain (registered)" in viewer.layers)
    shown = viewer.layers["stain (registered)"]
    shown.colormap, shown.contrast_limits, shown.gamma, shown.visible = "magma", (0.2, 0.6), 0.7, False
    user.click(keep.apply_button)
    user.wait_until(lambda: viewer.layers["stain (registered)"] is not shown)
    carried = viewer.layers["stain (registered)"]
    assert carried.colormap.name == "magma" and tuple(carried.contrast_limits) == (0.2, 0.6)
    assert carried.gamma == 0.7 and not carried.visible
    # Accepting twice keeps one registered image.
    for _ in range(2):
        user.click(keep.accept_button)
        user.wait_for_job(session)
        user.wait_until(lambda: session.accepted is not None)
    names = [layer.name for layer in viewer.layers]
    assert names.count("BF (registered)") == 1 and session.accepted.name == "BF (registered)"
    assert not errors


def test_export_dialog_starts_beside_the_moving_image_named_for_the_pair(make_napari_viewer, pair,
                                                                        tmp_path, monkeypatch):
    """The export dialog opened in the process's working folder as "transform.json"."""
    import tifffile

    from napari_comir.widgets._export import default_export_path

    bf, shg = pair
    tifffile.imwrite(tmp_path / "he scan.tif", bf)
    viewer = make_napari_viewer()
    (moving,) = viewer.open(str(tmp_path / "he scan.tif"))
    fixed = viewer.add_image(shg, name="SHG")
    # No ending: the format chosen in the dialog adds its own (".json" stayed whatever was chosen).
    assert default_export_path(fixed, moving) == tmp_path / "he_scan_to_SHG"
    # a folder that cannot be written (shared data): the working folder instead
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    assert default_export_path(fixed, moving) == Path.cwd() / "he_scan_to_SHG"
    moving.name = "he.scan.tif"  # no dot left to read as an ending
    assert default_export_path(fixed, moving) == Path.cwd() / "he_scan_tif_to_SHG"
    moving.name = "H&E (as scanned, turned)"  # one "_" between words, none at the ends
    assert default_export_path(fixed, moving) == Path.cwd() / "H_E_as_scanned_turned_to_SHG"
