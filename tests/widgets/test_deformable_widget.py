"""A deformable result in the GUI: chosen in the dock, reviewed (the moving review layer warped
through the field, the deformation view), accepted, exported and carried to other layers."""

import numpy as np
import pytest

from napari_comir.core.background import background_value
from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform, resample
from napari_comir.core.io.transform_formats import read_transform
from napari_comir.core.registration import RegistrationResult
from napari_comir.core.transforms import AffineTransform
from napari_comir.widgets import _review
from napari_comir.widgets.register import RegisterWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def field():
    return smooth_deformation((96, 96), 4.0, np.random.default_rng(0), smoothness_px=24.0)


def show_kept_field(session, field, user) -> RegistrationResult:
    """A deformable result whose field was kept, shown as the register worker shows it."""
    fixed, moving = session.viewer.layers["SHG"], session.viewer.layers["BF"]
    result = RegistrationResult(field, 0.9, 0.1, "search", {}, True,
                                deformable={"kept": True, "reasons": [], "max_displacement_px": 4.0})
    session.show_result(result, fixed, moving, _review.review_images(fixed, moving, field))
    user.wait_until(lambda: session.result is result and not session.busy)
    return result


def test_deformable_is_a_choice_and_says_what_its_stage_did(viewer_with_pair, user, errors):
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "deformable" in widget.run_panel.transform.choices
    widget.run_panel.transform.value = "deformable"
    widget.run_panel.rotation.value = 30
    user.click(widget.run_panel.register_button)
    job = user.wait_for_job(widget.session, 120)
    assert job.state.value == "finished", (job.error, errors)
    assert "deformable:" in widget.run_panel.details.value  # kept, or why the affine stands
    user.watch.check()


def test_a_field_review_hides_the_moving_image_it_shows_warped(viewer_with_pair, user, field):
    """The review of a field shows the moving image warped onto the fixed grid; the moving image
    itself, placed by the affine part, stuck out beyond it. Hidden while such a view shows, shown
    again for "before", "off" or the deformation view; after Accept it stays hidden."""
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session, review = widget.session, widget.review_panel
    moving = viewer.layers["BF"]
    show_kept_field(session, field, user)
    assert review.view.value == "overlay" and not moving.visible
    for view, shown in (("checkerboard", False), ("deformation", True), ("flicker", False),
                        ("off", True)):
        review.view.value = view
        assert moving.visible == shown, view
    review.view.value = "overlay"
    review.after.value = False  # before: the moving image as it was, beside the fixed one
    assert moving.visible
    review.after.value = True
    assert not moving.visible
    # Points carried onto the moving image go with it: over the warped review they lay off the
    # tissue they mark by the field's non-affine part (placed by the affine part).
    keep = widget.keep_panel
    marks = viewer.add_points(np.array([[30.0, 40.0], [60.0, 50.0]]), name="marks")
    keep.targets.value = [marks]
    keep.direction.value = "fixed → moving"
    user.click(keep.apply_button)
    carried = viewer.layers["marks (on BF)"]
    assert not carried.visible  # the review line says so, and where to see them
    assert "Hidden while this view shows: 'BF', 'marks (on BF)' ('off' shows them)" in \
        review.subject.value
    assert viewer.layers.selection.active.visible  # not the hidden new layer's controls
    review.view.value = "off"
    assert carried.visible and moving.visible and "Hidden" not in review.subject.value
    review.view.value = "checkerboard"
    assert not carried.visible and "'BF', 'marks (on BF)' ('off' shows them)" in review.subject.value
    review.view.value = "overlay"
    user.click(widget.keep_panel.accept_button)
    user.wait_until(lambda: session.accepted is not None)
    assert not moving.visible and session.review_view == "off"
    # still shown (a layer of the user's does not vanish), and said where it lies
    assert carried.visible and "'marks (on BF)' lie on BF as placed by the field's affine part" in \
        review.subject.value


def test_an_affine_result_after_a_field_leaves_no_deformation_view(viewer_with_pair, user, field):
    """A field's deformation view shown, then the pair registered affine: the deformation layer
    stayed in the layer list, hidden (and selected), under a result that has no field."""
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session = widget.session
    show_kept_field(session, field, user)
    widget.review_panel.view.value = "deformation"
    assert _review.DEFORMATION in viewer.layers
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    affine = RegistrationResult(AffineTransform.rigid(2.0), 0.9, 0.1, "search", {}, True)
    session.show_result(affine, fixed, moving, _review.review_images(fixed, moving, affine.transform))
    user.wait_until(lambda: session.result is affine and not session.busy
                    and _review.DEFORMATION not in viewer.layers)
    assert "deformation" not in widget.review_panel.view.choices


def test_the_fixed_image_deleted_gives_the_moving_one_back(viewer_with_pair, user, field):
    """The fixed image deleted under a field's review: the moving image stayed hidden (the
    canvas went black)."""
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    moving = viewer.layers["BF"]
    show_kept_field(widget.session, field, user)
    assert not moving.visible
    viewer.layers.remove("SHG")
    assert moving.visible and widget.session.result is None


def test_a_field_result_is_reviewed_accepted_exported_and_applied(viewer_with_pair, user, field,
                                                                   tmp_path):
    viewer = viewer_with_pair
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session = widget.session
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    show_kept_field(session, field, user)
    review_moving = session.review_layers[1]
    assert review_moving.metadata["comir_on_fixed"] and np.allclose(review_moving.affine.affine_matrix,
                                                                  np.eye(3))
    assert "points moved up to 4.0 px" in widget.run_panel.details.value
    widget.review_panel.view.value = "deformation"
    layer = viewer.layers[_review.DEFORMATION]
    assert layer.visible and layer.data.max() == pytest.approx(4.0, rel=0.01)
    assert layer.opacity < 1 and layer.colorbar.visible  # the tissue under it stays in sight
    # The moving image itself is placed by the affine part here: said, not left to be misread.
    assert "placed by the field's affine part" in widget.review_panel.subject.value
    widget.review_panel.view.value = "overlay"
    assert "affine part" not in widget.review_panel.subject.value

    # Points clicked over the review, which shows the moving image warped through the field,
    # lie where they were drawn on the fixed grid; over the moving image itself (view "off",
    # placed by the field's affine part), on its pixels. They were all taken as drawn over the
    # affine part: up to the field's 4 px off, silently.
    keep = widget.keep_panel
    drawn_rc = np.array([[30.0, 40.0], [60.0, 50.0], [20.0, 70.0]])
    widget.review_panel.view.value = "overlay"
    over_field = viewer.add_points(name="drawn over the field")
    widget.review_panel.view.value = "off"
    over_moving = viewer.add_points(name="drawn over the moving image")
    for layer in (over_field, over_moving):
        for point in drawn_rc:
            layer.add(point)
    keep.targets.value = [over_field, over_moving]
    keep.direction.value = "moving → fixed"
    user.click(keep.apply_button)
    moving_rc = (np.linalg.inv(np.asarray(moving.affine.affine_matrix)) @ np.c_[drawn_rc, np.ones(3)].T)[:2].T
    assert np.abs(field.apply_rc(drawn_rc) - drawn_rc).max() > 1.0  # the field moves them
    assert np.allclose(viewer.layers["drawn over the field (registered)"].data, drawn_rc, atol=1e-6)
    assert np.allclose(viewer.layers["drawn over the moving image (registered)"].data,
                       field.apply_rc(moving_rc), atol=1e-6)

    user.click(widget.keep_panel.accept_button)
    user.wait_for_job(session)
    accepted = session.accepted
    # outside the moving image: its background (a bright field's white)
    expected = resample(moving.data, field, fixed.data.shape[:2], cval=background_value(moving.data))
    assert np.abs(accepted.data.astype(float) - expected).mean() < 1.0
    assert DisplacementFieldTransform.from_dict(accepted.metadata["comir_transform"]).spacing_px == \
        field.spacing_px
    for name in ("t.json", "t.tfm", "t.elastix.txt"):
        assert (widget.keep_panel.export_transform(tmp_path / name)).is_file()
        # no pixel sizes known: a file in µm says its µm are pixels (it claimed micrometres)
        assert ("pixel sizes unknown" in widget.keep_panel.status.value) == (name != "t.json")
    # elastix's files (the dock offered none for a field; the CLI did): transformix resamples
    # onto the fixed grid through the field's own parameter file and image, beside it.
    parameters = (tmp_path / "t.elastix.txt").read_text()
    assert "(Size 96 96)" in parameters and str(tmp_path / "t.elastix.field.txt") in parameters
    assert (tmp_path / "t.elastix.field.mha").is_file()
    assert "t.elastix.field.txt and t.elastix.field.mha beside it" in widget.keep_panel.status.value
    # readable by the others on a shared disk, as the text files are (it was written 0600)
    assert (tmp_path / "t.elastix.field.mha").stat().st_mode & 0o777 == \
        (tmp_path / "t.elastix.txt").stat().st_mode & 0o777
    # The dialog offers the formats that hold a field (it offered the affine ones, which each
    # refused it), and a name typed without an ending gets the chosen one.
    from qtpy.QtWidgets import QFileDialog

    offered = []

    def dialog(_parent, _title, _start, filters):
        offered.extend(filters.split(";;"))
        return str(tmp_path / "typed"), offered[2]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QFileDialog, "getSaveFileName", staticmethod(dialog))
        user.click(widget.keep_panel.export_button)
    assert [name.rsplit("(", 1)[1] for name in offered] == ["*.json)", "*.tfm)", "*.ngff.zarr)",
                                                             "*.npz)", "*.elastix.txt)"]
    assert read_transform(tmp_path / "typed.ngff.zarr").spacing_px == field.spacing_px
    points = viewer.add_points(np.array([[30.0, 40.0]]), name="cells")
    (mapped,) = widget.keep_panel.apply_to([points])
    assert np.allclose(mapped.data, field.apply_rc(points.data), atol=1e-6)
    assert isinstance(field.affine, AffineTransform)


def test_a_field_not_kept_says_why_once(viewer_with_pair):
    from napari_comir.widgets._run_panel import details_tooltip, result_text

    reason = ("the field does not make the details agree beyond chance (detail score 4.4 -> 5.1, "
              "a gain of 0.5; at least 1.5 needed); the affine result stands")
    result = RegistrationResult(AffineTransform.rigid(2.0, (3.0, 1.0)), 0.9, 0.1, "search", {}, True,
                                deformable={"kept": False, "reasons": [reason]})
    text = result_text(result, viewer_with_pair.layers["SHG"], viewer_with_pair.layers["BF"])
    assert text.splitlines()[0].startswith("rigid: rotation")  # no "part": the affine stands
    assert text.splitlines()[1] == ("deformable: not kept: the field does not make the details "
                                    "agree beyond chance; the affine result stands")
    assert text.count("the affine result stands") == 1
    assert reason in details_tooltip(result)  # the numbers, for whoever wants them
    # A field fitted: what it did to the details, and how many blocks matched against chance;
    # none fitted (it folded): no such line (it read "detail 0.0 -> 0.0; blocks matched 0% (0%").
    # The share against chance: "blocks matched 22%" alone read like a failure beside "likely".
    measured = {"affine_detail_score": 4.4, "deformable_detail_score": 5.1,
                "matched_share": 0.5, "chance_share": 0.2}
    for stage, line in ((measured, "field: 50% of blocks matched (2.5x chance); details agree "
                                   "5.1 with it, 4.4 without"),
                        ({"image_detail": True}, "field: 50% of blocks matched (2.5x chance; CoMIRs "
                         "and tissue); details agree 5.1 with it, 4.4 without"),
                        ({"chance_share": 0.0}, "field: 50% of blocks matched (none by chance; "
                         "CoMIRs and tissue); details agree 5.1 with it, 4.4 without"),
                        ({"matched_share": None, "chance_share": None}, None)):
        result.deformable.update(stage)
        text = result_text(result, viewer_with_pair.layers["SHG"], viewer_with_pair.layers["BF"])
        assert (line in text.splitlines()) if line else "field:" not in text


def test_a_kept_field_is_taught_from(make_napari_viewer, user, errors):
    """Teach after accepting a deformable result: the moving image is taught as the field warps
    it (it failed: "'DisplacementFieldTransform' object has no attribute 'matrix_xy'")."""
    from napari_comir.core.synthetic import synthetic_pair
    from napari_comir.widgets.guided import GuidedDock

    bf, shg = synthetic_pair((160, 160), 0)  # teaching takes 128 px patches
    field = smooth_deformation(shg.shape, 4.0, np.random.default_rng(0), smoothness_px=24.0)
    viewer = make_napari_viewer()
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    dock = GuidedDock(viewer)
    viewer.window.add_dock_widget(dock)
    session = dock.session
    show_kept_field(session, field, user)
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(session)
    dock.teach_panel.seconds.value = 5
    dock.teach_panel.save_as.value = "taught-on-a-field"
    user.click(dock.teach_panel.teach_button)
    job = user.wait_for_job(session, 120)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    outcome, _ = job.result  # taught and checked (the tiny untrained model is then refused)
    assert outcome.steps > 0 and "check pair" in dock.teach_panel.status.value
