"""The expert Register dock, clicked: real worker threads, waited for; the review views, keep,
export, apply and landmarks act on the session's result."""

import json

import numpy as np
import pytest

from napari_comir.core.registration import RegistrationResult
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform
from napari_comir.widgets import _review
from napari_comir.widgets.register import RegisterWidget

pytestmark = pytest.mark.gui

KNOWN = AffineTransform.about_center(20.0, (47.5, 47.5), (5.0, -3.0))


def show_known(widget, user, result=None) -> None:
    """Make a known result the session's (as a finished registration does) and wait for it."""
    session, viewer = widget.session, widget.viewer
    result = result or RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    session.show_result(result, fixed, moving, _review.review_images(fixed, moving))
    user.qtbot.waitUntil(lambda: not session.busy and session.result is result)


@pytest.fixture
def registered(viewer_with_pair, errors, user):
    """A dock that ran a real (untrained-model) registration of BF onto SHG, clicked."""
    viewer = viewer_with_pair
    bf = viewer.layers["BF"].data
    viewer.layers["BF"].data = resample(bf, KNOWN.inverse(), bf.shape[:2])  # misalign
    viewer.layers["BF"].metadata["comir_true_transform"] = KNOWN.to_dict()
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    panel = widget.run_panel
    assert panel.fixed.value.name == "SHG" and panel.moving.value.name == "BF"
    panel.rotation.value = 30
    user.click(panel.register_button)
    job = user.wait_for_job(widget.session)
    assert job.state.value == "finished", (job.error, errors)
    user.watch.check()
    return viewer, widget


def test_register_sets_affine_overlay_and_views(registered, user):
    viewer, widget = registered
    session = widget.session
    transform = session.result.transform
    bf = viewer.layers["BF"]
    assert np.allclose(bf.affine.affine_matrix, transform.matrix_rc)
    assert "score" in widget.run_panel.details.value
    assert "error vs. the known transform" in widget.run_panel.details.value
    # The review overlay on top: fixed green (added), moving magenta, the user's layers unchanged.
    review_fixed, review_moving = viewer.layers[-1], viewer.layers[-2]
    assert review_fixed.name == "review: SHG (green)" and review_fixed.blending == "additive"
    assert review_moving.name == "review: BF (magenta)"
    assert review_fixed.colormap.name == "green" and review_moving.colormap.name == "magenta"
    assert np.allclose(review_moving.affine.affine_matrix, transform.matrix_rc)
    assert viewer.layers["SHG"].colormap.name == "gray" and viewer.layers["BF"].visible

    review = widget.review_panel
    review.after.value = False
    assert np.allclose(bf.affine.affine_matrix, np.eye(3))
    assert np.allclose(review_moving.affine.affine_matrix, np.eye(3))
    review.after.value = True
    assert np.allclose(bf.affine.affine_matrix, transform.matrix_rc)

    review.view.value = "checkerboard"
    board = viewer.layers[_review.CHECKERBOARD]
    assert board.visible and board.data.shape == (96, 96, 3)
    assert not review_fixed.visible and not review_moving.visible
    # Where the turned BF does not reach, the SHG alone (the BF's squares were black there);
    # within the overlap, squares of each.
    shg = _review._display_grey(viewer.layers["SHG"].data)
    reaches = resample(np.ones(bf.data.shape[:2], np.float32), transform, shg.shape) > 0.5
    assert not reaches.all()
    assert np.allclose(board.data[~reaches], shg[~reaches][:, None])
    assert not np.allclose(board.data[reaches], shg[reaches][:, None], atol=0.05)
    review.view.value = "agreement"
    agreement = viewer.layers[_review.AGREEMENT]
    assert agreement.visible and not board.visible and agreement.data.shape == (96, 96)
    assert agreement.colorbar.visible  # which colour is agreement, beside the view
    # no overlap (the corners the turned image leaves): NaN, which napari leaves transparent; as
    # 0 it was white over the user's images
    assert np.isnan(agreement.data[0, 0]) and np.isnan(agreement.data[-1, -1])
    assert np.nanmax(agreement.data) <= 1.0 + 1e-6 and np.nanmin(agreement.data) >= -1.0 - 1e-6
    after_map = agreement.data.copy()
    review.after.value = False  # before: the agreement of the CoMIRs unregistered (it stayed)
    before_map = viewer.layers[_review.AGREEMENT].data
    assert np.nanmean(before_map) < np.nanmean(after_map) - 0.1, (np.nanmean(before_map),
                                                                   np.nanmean(after_map))
    review.after.value = True
    assert np.allclose(viewer.layers[_review.AGREEMENT].data, after_map, equal_nan=True)
    review.view.value = "CoMIRs"  # the CoMIRs the registration compared, in the review layers
    assert review_fixed.visible and review_fixed.data.shape == (96, 96)
    # the layer controls act on what is shown: the hidden agreement map stayed selected
    assert viewer.layers.selection.active is review_fixed
    assert review_fixed.metadata["comir_review_view"] == "CoMIRs"
    comir_grey = review_fixed.data.copy()
    review.view.value = "checkerboard"  # then the overlay: the images again, not the CoMIRs
    review.view.value = "overlay"
    assert review_fixed.metadata["comir_review_view"] == "images"
    assert not np.array_equal(review_fixed.data, comir_grey)
    review.view.value = "CoMIRs"
    review.view.value = "flicker"
    user.wait(1.2)  # the timer alternates the two layers twice a second
    assert review_fixed.visible != review_moving.visible
    # Both frames alike, grey and opaque: only a misregistration jumps (the green one was added
    # over the user's colour image, the magenta one shown alone: the whole picture flashed).
    for layer in (review_fixed, review_moving):
        assert layer.colormap.name == "gray" and layer.blending == "opaque"
    # the user's images hidden meanwhile: the colour H&E showed around the moving frame
    assert not viewer.layers["SHG"].visible and not bf.visible
    assert "Hidden while this view shows: 'BF', 'SHG'" in review.subject.value
    review.view.value = "overlay"
    assert viewer.layers["SHG"].visible and bf.visible
    assert review_fixed.visible and review_moving.visible and not agreement.visible
    assert (review_fixed.colormap.name, review_fixed.blending) == ("green", "additive")
    assert (review_moving.colormap.name, review_moving.blending) == ("magenta", "translucent")
    assert review_fixed.metadata["comir_review_view"] == "images"
    assert "white where they agree" in review.subject.value


def test_a_second_registration_replaces_the_review_layers(registered, user):
    viewer, widget = registered
    count = len(viewer.layers)
    user.click(widget.run_panel.register_button)
    user.wait_for_job(widget.session)
    assert len(viewer.layers) == count  # one set of review layers per pair


def test_accept_export_and_apply(registered, user, tmp_path):
    viewer, widget = registered
    show_known(widget, user)  # a known result makes the expected coordinates exact
    keep = widget.keep_panel
    user.click(keep.accept_button)
    user.wait_for_job(widget.session)
    layer = widget.session.accepted
    assert layer.name == "BF (registered)" and layer.rgb
    assert layer.data.shape == viewer.layers["BF"].data.shape
    assert layer.metadata["comir_transform"] == KNOWN.to_dict()
    assert "kept as layer 'BF (registered)'" in keep.status.value

    path = keep.export_transform(tmp_path / "t.json")
    assert np.allclose(AffineTransform.from_dict(json.loads(path.read_text())).matrix_xy,
                       KNOWN.matrix_xy)
    found = AffineTransform.from_csv(keep.export_transform(tmp_path / "t.csv"))
    assert np.allclose(found.matrix_xy, KNOWN.matrix_xy)

    # Drawn on the moving image as it was ("after" unticked): its own pixels (see
    # test_guided_dock for layers drawn over the registered preview).
    widget.review_panel.after.value = False
    points = viewer.add_points(np.array([[10.0, 20.0], [50.0, 60.0]]), name="cells")
    labels = viewer.add_labels(np.zeros((96, 96), np.int32), name="nuclei")
    labels.data[30:50, 30:50] = 7
    shapes = viewer.add_shapes([np.array([[10, 10], [10, 40], [40, 25]])], shape_type="polygon",
                               name="roi")
    offered = {layer.name for layer in keep.targets.choices}
    assert offered == {"cells", "nuclei", "roi"}  # not the review, CoMIR or registered layers
    keep.targets.value = [points, labels, shapes]
    user.click(keep.apply_button)
    new_points, new_labels, new_shapes = (viewer.layers[f"{name} (registered)"]
                                          for name in ("cells", "nuclei", "roi"))
    assert np.allclose(new_points.data, KNOWN.apply_rc(points.data))
    assert set(np.unique(new_labels.data)) == {0, 7}  # nearest neighbour: no blended labels
    assert np.allclose(new_shapes.data[0], KNOWN.apply_rc(shapes.data[0]))


def test_deleting_a_layer_disables_what_needs_it(registered, user):
    viewer, widget = registered
    assert widget.keep_panel.accept_button.enabled
    viewer.layers.remove("BF")
    assert widget.session.result is None and not widget.keep_panel.accept_button.enabled
    assert not widget.review_panel.view.enabled
    # the review layers go once napari has done removing (a selection may hold them too)
    user.wait_until(lambda: not any(layer.name.startswith("review:") for layer in viewer.layers))


def test_keep_panel_says_what_a_click_could_not_do(registered, user, tmp_path, monkeypatch):
    """Unknown pixel sizes: an export in µm says its µm are pixels, QuPath's matrix (pixels)
    says nothing of it (it did, as an ITK .txt); Apply with no layer chosen says so (it did
    nothing, silently)."""
    from qtpy.QtWidgets import QFileDialog

    viewer, widget = registered
    show_known(widget, user)
    keep = widget.keep_panel
    for name, noted in (("t.qupath.txt", False), ("t.txt", True), ("t.csv", False)):
        monkeypatch.setattr(QFileDialog, "getSaveFileName",
                            staticmethod(lambda *args, name=name: (str(tmp_path / name), "")))
        user.click(keep.export_button)
        assert keep.status.value.startswith(f"✓ transform written to {tmp_path / name}")
        assert ("pixel sizes unknown" in keep.status.value) == noted, name
    keep.targets.value = []
    user.click(keep.apply_button)
    assert keep.status.value == "⚠ select the layers to carry in 'apply to' first"


def test_the_fixed_image_deleted_puts_the_moving_one_back_on_its_grid(registered, user):
    """The moving image stayed placed by a result that was gone with the fixed image."""
    viewer, widget = registered
    show_known(widget, user)
    moving = viewer.layers["BF"]
    assert not np.allclose(moving.affine.affine_matrix, np.eye(3))  # placed by the result
    viewer.layers.remove("SHG")
    assert np.allclose(moving.affine.affine_matrix, np.eye(3)) and moving.visible


def test_export_formats_use_the_layers_scale(registered, user, tmp_path, monkeypatch):
    """ITK and NGFF files carry the layers' pixel sizes; the dialog adds the chosen ending."""
    sitk = pytest.importorskip("SimpleITK")
    from napari_comir.core.io.transform_formats import read_transform
    from napari_comir.widgets import _export

    viewer, widget = registered
    show_known(widget, user)
    viewer.layers["SHG"].scale = (0.5, 0.5)
    viewer.layers["BF"].scale = (0.8, 0.8)
    keep = widget.keep_panel
    itk = sitk.ReadTransform(str(keep.export_transform(tmp_path / "t.tfm")))
    moving_xy = np.array(itk.TransformPoint((10 * 0.5, 20 * 0.5))) / 0.8  # fixed pixel (10, 20)
    assert KNOWN.apply_xy(moving_xy)[0] == pytest.approx([10.0, 20.0])
    for name in ("t.ngff.json", "t.qupath.txt", "t.csv", "t.json"):
        found = read_transform(keep.export_transform(tmp_path / name))
        assert np.allclose(found.matrix_xy, KNOWN.matrix_xy)
    ngff = json.loads((tmp_path / "t.ngff.json").read_text())
    assert ngff["napari_comir"]["moving_pixel_size_um"] == 0.8

    from qtpy.QtWidgets import QFileDialog

    chosen = [name for name, _ in _export.FILTERS if "QuPath" in name][0]
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args: (str(tmp_path / "typed"), chosen)))
    user.click(keep.export_button)
    assert np.allclose(read_transform(tmp_path / "typed.qupath.txt").matrix_xy, KNOWN.matrix_xy)
    # An ending no tool of ours knows is refused saying which it knows (it was written as JSON
    # under "typed.h5.json", silently).
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args: (str(tmp_path / "typed.h5"), chosen)))
    user.click(keep.export_button)
    # ... the dialog's endings, elastix's among them; no format to "give" in a dialog
    assert keep.status.value == (
        "⚠ cannot export: cannot tell the format from 'typed.h5': end the name in .json, .tfm, "
        ".txt, .ngff.json, .qupath.txt, .csv or .elastix.txt, or choose a format in the dialog "
        "and type the name without an ending")
    assert not list(tmp_path.glob("typed.h5*"))


def test_a_failure_says_why_in_the_dock(registered, user):
    viewer, widget = registered
    reason = "their fine details do not match (detail score 0.4, a success scores at least 1.7)"
    show_known(widget, user, RegistrationResult(KNOWN, 0.05, 0.1, "search", {}, False,
                                                reasons=[reason]))
    verdict = widget.run_panel.verdict
    assert verdict.value.startswith("⚠ probably WRONG") and "fine details" in verdict.value
    assert "✓" not in verdict.value and verdict.native.isVisibleTo(widget.native)


def test_a_failure_of_a_pair_named_the_other_way_round_asks_whether_it_is_swapped(registered, user):
    """The moving image named for the fixed network's modality (an SHG picked as moving): the
    failure says so, besides its reason; a success never carries the hint."""
    viewer, widget = registered
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    fixed.name, moving.name = "bf scan", "shg scan"
    card = widget.session.models.model.card
    assert (card.fixed_modality, card.moving_modality) == ("shg", "bf")
    failed = RegistrationResult(KNOWN, 0.05, 0.1, "search", {}, False, reasons=["no match"])
    widget.session.show_result(failed, fixed, moving, _review.review_images(fixed, moving))
    user.qtbot.waitUntil(lambda: not widget.session.busy and widget.session.result is failed)
    assert widget.run_panel.verdict.value.endswith(
        "(the moving image's name mentions 'shg', the other network's: are fixed and moving swapped?)")
    good = RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True)
    widget.session.show_result(good, fixed, moving, _review.review_images(fixed, moving))
    user.qtbot.waitUntil(lambda: not widget.session.busy and widget.session.result is good)
    assert widget.run_panel.verdict.value == "✓ likely right"


def test_a_pair_chosen_the_other_way_round_fails_saying_swap_them(viewer_with_pair, user, errors):
    """The RGB bright field chosen as bf-shg's fixed (SHG) image: the failure said only that it
    has 3 channels where 1 is expected; it now says the model takes them swapped."""
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    panel = widget.run_panel
    panel.fixed.value, panel.moving.value = viewer.layers["BF"], viewer.layers["SHG"]
    user.click(panel.register_button)
    assert user.wait_for_job(widget.session).state.value == "failed"
    assert panel.verdict.value.startswith("⚠ failed: ")
    assert panel.verdict.value.endswith("takes 'SHG' as fixed (shg) and 'BF' as moving (bf): swap them)")


def test_register_needs_two_layers(make_napari_viewer, errors):
    widget = RegisterWidget(make_napari_viewer())
    assert widget.run_panel.register() is None and errors
    assert "choose two different image layers" in widget.run_panel.verdict.value
    assert not widget.keep_panel.accept_button.enabled


def test_landmarks_fit_refine_from_and_residuals(viewer_with_pair, errors, user):
    """Point pairs placed in the two landmark layers give the transform (exactly, when placed
    exactly), residuals per landmark in the dock, and a registration refined from them."""
    viewer = viewer_with_pair
    viewer.layers["SHG"].scale = (0.5, 0.5)  # µm per px: residuals in µm too
    viewer.layers["BF"].scale = (0.5, 0.5)
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.run_panel.transform.value = "similarity"
    landmarks = widget.landmarks_panel
    assert landmarks.fit() is None and errors  # no landmark layers yet
    user.click(landmarks.add_button)
    fixed_points, moving_points = (viewer.layers[name] for name in ("landmarks: SHG (↔ BF)",
                                                                     "landmarks: BF (↔ SHG)"))
    moving_rc = np.array([[20.0, 15.0], [70.0, 30.0], [40.0, 80.0]])
    moving_points.data = moving_rc
    fixed_points.data = KNOWN.apply_rc(moving_rc)
    errors.clear()
    user.click(landmarks.fit_button)
    session = widget.session
    user.qtbot.waitUntil(lambda: session.result is not None and not session.busy)
    assert session.result.method == "landmarks" and not errors, errors  # no failure toast
    assert np.allclose(session.result.transform.matrix_xy, KNOWN.matrix_xy, atol=1e-6)
    assert "landmark 3: 0.0 px (0.00 µm)" in landmarks.residuals.value
    assert "landmarks only" in widget.run_panel.verdict.value
    assert viewer.layers[-1].name.startswith("landmarks:")  # above the review layers
    user.click(landmarks.register_button)
    # one job at a time: a fit now would be replaced by the registration's result
    assert not landmarks.fit_button.enabled and not landmarks.register_button.enabled
    job = user.wait_for_job(session)
    assert job.state.value == "finished", job.error
    assert landmarks.fit_button.enabled
    assert session.result.method == "initial" and "landmark 1:" in landmarks.residuals.value
    # why the landmarks may agree less after a refinement on the images
    assert "refined on the images from the landmarks' own fit (mean 0.0 px" in landmarks.residuals.value
    fixed_points.data = fixed_points.data[:2]
    errors.clear()
    assert landmarks.fit() is None and "3 moving landmarks" in errors[0]


def test_choices_persist_to_the_next_launch(make_napari_viewer, tmp_path):
    """Transform model, rotation range and model are kept in the settings file; a broken file
    is ignored."""
    import os

    from napari_comir.widgets._state import state_for

    first = RegisterWidget(make_napari_viewer()).run_panel
    first.transform.value, first.rotation.value = "similarity", 30
    state_for(make_napari_viewer()).load("test-model")
    second = RegisterWidget(make_napari_viewer()).run_panel
    assert (second.transform.value, second.rotation.value) == ("similarity", 30)
    saved = json.loads(open(os.environ["NAPARI_COMIR_SETTINGS"]).read())
    assert saved["model"] == "test-model" and saved["transform"] == "similarity"
    with open(os.environ["NAPARI_COMIR_SETTINGS"], "w") as handle:
        handle.write("{broken")
    assert RegisterWidget(make_napari_viewer()).run_panel.transform.value == "affine"


def test_an_earlier_accepted_layer_is_hidden_while_a_new_result_is_reviewed(registered, user):
    """Accept, then register again: the first Accept's layer lies over the images on the fixed
    grid, and its fill showed around the new result's frame (flashing in flicker, white where
    the overlay adds green over it). Hidden while a view reviews the new result, and said."""
    viewer, widget = registered
    session, review = widget.session, widget.review_panel
    user.click(widget.keep_panel.accept_button)
    user.wait_for_job(session)
    accepted = session.accepted
    assert accepted.visible and session.review_view == "off"
    show_known(widget, user, RegistrationResult(AffineTransform.rigid(3.0), 0.9, 0.1, "search", {},
                                                True))
    review.view.value = "overlay"
    assert not accepted.visible and "'BF (registered)'" in review.subject.value
    review.view.value = "off"
    assert accepted.visible and "Hidden" not in review.subject.value


def test_another_open_image_is_hidden_while_a_view_reviews_the_pair(registered, user):
    """A third image opened above the pair lay over it in every view, and the agreement and
    deformation maps were drawn over it instead of the fixed image. Hidden (and named) while a
    view reviews the pair; "off" shows the user's layers as they set them."""
    viewer, widget = registered
    review = widget.review_panel
    third = viewer.add_image(np.zeros((96, 96), np.float32), name="another stain")
    show_known(widget, user, RegistrationResult(KNOWN, 0.9, 0.1, "search", {}, True))
    for view in ("overlay", "checkerboard", "agreement", "flicker"):
        review.view.value = view
        assert not third.visible and "'another stain'" in review.subject.value, view
    review.view.value = "off"
    assert third.visible and "Hidden" not in review.subject.value


def test_a_closed_viewer_is_freed_with_its_session(pair, user):
    """A viewer no longer used goes, and its registration session with it: the session held the
    viewer, which kept every layer, its data and Qt widgets alive for as long as the program
    ran, and every later garbage collection longer. (A viewer model: napari's fixture holds
    its viewers.)"""
    import gc
    import weakref

    from napari.components import ViewerModel

    from napari_comir.widgets import session as session_module
    from napari_comir.widgets.session import session_for

    viewer = ViewerModel()
    viewer.add_image(pair[0], name="BF", rgb=True)
    viewer.add_image(pair[1], name="SHG")
    session = session_for(viewer)
    session.choose(viewer.layers["SHG"], viewer.layers["BF"])
    session.register(transform="affine", rotation_range=30.0)
    assert user.wait_for_job(session).state.value == "finished"
    user.wait_until(lambda: session.result is not None)
    session, dropped = weakref.ref(session), weakref.ref(viewer)
    del viewer
    gc.collect()
    assert dropped() is None
    assert session() is None and session_module._SESSIONS == {}
