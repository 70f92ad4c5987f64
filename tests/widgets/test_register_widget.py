import json

import numpy as np
import pytest

from napari_comir.core.registration import RegistrationResult
from napari_comir.core.transforms import AffineTransform, resample
from napari_comir.widgets.register import CHECKERBOARD, RegisterWidget

pytestmark = pytest.mark.gui

KNOWN = AffineTransform.about_center(20.0, (47.5, 47.5), (5.0, -3.0))


@pytest.fixture
def registered(viewer_with_pair, errors):
    """A widget that ran a real (untrained-model) registration of BF onto SHG."""
    viewer = viewer_with_pair
    bf = viewer.layers["BF"].data
    viewer.layers["BF"].data = resample(bf, KNOWN.inverse(), bf.shape[:2])  # misalign
    viewer.layers["BF"].metadata["comir_true_transform"] = KNOWN.to_dict()
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget._fixed.value.name == "SHG" and widget._moving.value.name == "BF"
    widget._rotation.value = 30
    job = widget.run()
    assert job is not None and not job.failed, errors
    return viewer, widget


def test_register_sets_affine_overlay_and_toggles(registered):
    viewer, widget = registered
    transform = widget.result.transform
    bf = viewer.layers["BF"]
    assert np.allclose(bf.affine.affine_matrix, transform.matrix_rc)
    assert np.allclose(viewer.layers["CoMIR (BF)"].affine.affine_matrix, transform.matrix_rc)
    assert "score" in widget._score.value and "error vs." in widget._score.value
    # The review overlay on top: fixed green (added), moving magenta, the user's layers unchanged.
    review_fixed, review_moving = viewer.layers[-1], viewer.layers[-2]
    assert review_fixed.name == "review: SHG (green)" and review_fixed.blending == "additive"
    assert review_moving.name == "review: BF (magenta)"
    assert review_fixed.colormap.name == "green" and review_moving.colormap.name == "magenta"
    assert np.allclose(review_moving.affine.affine_matrix, transform.matrix_rc)
    assert viewer.layers["SHG"].colormap.name == "gray" and viewer.layers["BF"].visible
    assert not viewer.layers["CoMIR (BF)"].visible  # it would wash the overlay out

    widget._after.value = False
    assert np.allclose(bf.affine.affine_matrix, np.eye(3))
    assert np.allclose(review_moving.affine.affine_matrix, np.eye(3))
    widget._after.value = True
    assert np.allclose(bf.affine.affine_matrix, transform.matrix_rc)
    widget._review.value = False
    assert not review_fixed.visible and not review_moving.visible

    widget._checker.value = True
    board = viewer.layers[CHECKERBOARD]
    assert board.visible and board.data.shape == (96, 96, 3)
    widget._square.value = 8
    assert board.data.shape == (96, 96, 3)
    widget._checker.value = False
    assert not board.visible


def test_accept_export_and_apply(registered, tmp_path):
    viewer, widget = registered
    # A known result makes the expected coordinates exact.
    widget.show_result(RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True),
                       viewer.layers["SHG"], viewer.layers["BF"])
    assert widget._warning.value == ""
    layer = widget.accept()
    assert layer.name == "BF (registered)" and layer.rgb
    assert layer.data.shape == viewer.layers["BF"].data.shape
    assert layer.metadata["comir_transform"] == KNOWN.to_dict()

    path = widget.export_transform(tmp_path / "t.json")
    assert np.allclose(AffineTransform.from_dict(json.loads(path.read_text())).matrix_xy,
                       KNOWN.matrix_xy)
    csv_path = widget.export_transform(tmp_path / "t.csv")
    found = AffineTransform.from_csv(csv_path)
    assert np.allclose(found.matrix_xy, KNOWN.matrix_xy)

    points = viewer.add_points(np.array([[10.0, 20.0], [50.0, 60.0]]), name="cells")
    labels = viewer.add_labels(np.zeros((96, 96), np.int32), name="nuclei")
    labels.data[30:50, 30:50] = 7
    shapes = viewer.add_shapes([np.array([[10, 10], [10, 40], [40, 25]])], shape_type="polygon",
                               name="roi")
    new_points, new_labels, new_shapes = widget.apply_to([points, labels, shapes])
    assert np.allclose(new_points.data, KNOWN.apply_rc(points.data))
    assert set(np.unique(new_labels.data)) == {0, 7}  # nearest neighbour: no blended labels
    assert np.allclose(new_shapes.data[0], KNOWN.apply_rc(shapes.data[0]))


def test_export_formats_use_the_layers_scale(registered, tmp_path, monkeypatch):
    """ITK and NGFF files carry the layers' pixel sizes; the dialog adds the chosen ending."""
    sitk = pytest.importorskip("SimpleITK")
    from napari_comir.core.io.transform_formats import read_transform
    from napari_comir.widgets import _export

    viewer, widget = registered
    widget.show_result(RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True),
                       viewer.layers["SHG"], viewer.layers["BF"])
    viewer.layers["SHG"].scale = (0.5, 0.5)
    viewer.layers["BF"].scale = (0.8, 0.8)
    itk = sitk.ReadTransform(str(widget.export_transform(tmp_path / "t.tfm")))
    moving_xy = np.array(itk.TransformPoint((10 * 0.5, 20 * 0.5))) / 0.8  # fixed pixel (10, 20)
    assert KNOWN.apply_xy(moving_xy)[0] == pytest.approx([10.0, 20.0])
    for name in ("t.ngff.json", "t.qupath.txt", "t.csv", "t.json"):
        found = read_transform(widget.export_transform(tmp_path / name))
        assert np.allclose(found.matrix_xy, KNOWN.matrix_xy)
    assert json.loads((tmp_path / "t.ngff.json").read_text())["napari_comir"]["moving_pixel_size_um"] == 0.8

    from qtpy.QtWidgets import QFileDialog

    chosen = [name for name, _ in _export.FILTERS if "QuPath" in name][0]
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args: (str(tmp_path / "typed"), chosen)))
    widget._export_dialog()
    assert np.allclose(read_transform(tmp_path / "typed.qupath.txt").matrix_xy, KNOWN.matrix_xy)


def test_low_score_warns(registered):
    viewer, widget = registered
    reason = "their fine details do not match (detail score 0.4, a success scores at least 1.7)"
    widget.show_result(RegistrationResult(KNOWN, 0.05, 0.1, "search", {}, False, reasons=[reason]),
                       viewer.layers["SHG"], viewer.layers["BF"])
    assert "FAILED" in widget._warning.value and "fine details" in widget._warning.value


def test_register_needs_two_layers(make_napari_viewer, errors):
    widget = RegisterWidget(make_napari_viewer())
    assert widget.run() is None and errors
    assert widget.accept() is None


def test_landmarks_fit_register_from_and_residuals(viewer_with_pair, errors):
    """Point pairs placed in the two landmark layers give the transform (exactly, when placed
    exactly), residuals per landmark, and a registration refined from them."""
    viewer = viewer_with_pair
    viewer.layers["SHG"].scale = (0.5, 0.5)  # µm per px: residuals in µm too
    viewer.layers["BF"].scale = (0.5, 0.5)
    widget = RegisterWidget(viewer)
    widget._transform.value = "similarity"
    assert widget.fit_landmarks() is None and errors  # no landmark layers yet
    widget.add_landmarks()
    fixed_points, moving_points = viewer.layers["landmarks: SHG"], viewer.layers["landmarks: BF"]
    moving_rc = np.array([[20.0, 15.0], [70.0, 30.0], [40.0, 80.0]])
    moving_points.data = moving_rc
    fixed_points.data = KNOWN.apply_rc(moving_rc)
    result = widget.fit_landmarks()
    assert result.method == "landmarks" and not result.success_likely
    assert np.allclose(result.transform.matrix_xy, KNOWN.matrix_xy, atol=1e-6)
    assert "landmark 3: 0.0 px (0.00 µm)" in widget._residuals.value
    assert "from the landmarks only" in widget._score.value and "µm" in widget._score.value
    job = widget.run(from_landmarks=True)
    assert job is not None and not job.failed
    assert widget.result.method == "initial" and "landmark 1:" in widget._residuals.value
    fixed_points.data = fixed_points.data[:2]
    errors.clear()
    assert widget.fit_landmarks() is None and "3 moving landmarks" in errors[0]


def test_choices_persist_to_the_next_launch(make_napari_viewer, tmp_path):
    """Transform model, rotation range and model are kept in the settings file; a broken file
    is ignored."""
    import os

    from napari_comir.widgets._state import state_for

    first = RegisterWidget(make_napari_viewer())
    first._transform.value, first._rotation.value = "similarity", 30
    state_for(make_napari_viewer()).load("test-model")
    second_viewer = make_napari_viewer()
    second = RegisterWidget(second_viewer)
    assert (second._transform.value, second._rotation.value) == ("similarity", 30)
    saved = json.loads(open(os.environ["NAPARI_COMIR_SETTINGS"]).read())
    assert saved["model"] == "test-model" and saved["transform"] == "similarity"
    with open(os.environ["NAPARI_COMIR_SETTINGS"], "w") as handle:
        handle.write("{broken")
    assert RegisterWidget(make_napari_viewer())._transform.value == "affine"


def test_flicker_alternates_the_review_layers(registered):
    viewer, widget = registered
    fixed, moving = widget._review_layers
    widget._flicker.value = True
    assert widget._flicker_timer.isActive()
    widget._flicker_step()
    first = (fixed.visible, moving.visible)
    widget._flicker_step()
    assert first in ((True, False), (False, True)) and (fixed.visible, moving.visible) == first[::-1]
    widget._flicker.value = False
    assert not widget._flicker_timer.isActive() and fixed.visible and moving.visible


def test_agreement_map_of_the_comirs(registered):
    viewer, widget = registered
    widget._agreement.value = True
    layer = viewer.layers["review: CoMIR agreement (local NCC)"]
    assert layer.visible and layer.data.shape == viewer.layers["SHG"].data.shape
    assert np.nanmax(layer.data) <= 1.0 + 1e-6 and np.nanmin(layer.data) >= -1.0 - 1e-6
    widget._agreement.value = False
    assert not layer.visible
