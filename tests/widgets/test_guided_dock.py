"""The guided dock, clicked as a person does: real worker threads, results waited for, the
verdict and the numbers read off the dock, the GUI never frozen, the window at 1280 x 800."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_comir.core.errors import InputError
from napari_comir.widgets import _state
from napari_comir.widgets.guided import STEPS, GuidedDock

pytestmark = pytest.mark.gui
#: Longest the GUI thread may stall while a job runs (s).
MAX_FREEZE_S = 0.5
SCREEN = (1280, 800)


def statuses(dock) -> dict:
    return {step: dock.status[step].value for step in STEPS}


def open_dock(viewer) -> GuidedDock:
    """The dock as the menu opens it, in a window the size of a laptop screen."""
    viewer.window._qt_window.resize(*SCREEN)
    _, dock = viewer.window.add_plugin_dock_widget("napari-comir", "CoMIR registration")
    return dock


def open_sample_pair(make_napari_viewer):
    """A viewer with the misaligned sample pair, the dock on bundled bf-shg."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-comir", "bf_shg_pair_misaligned")
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    return viewer, dock


def open_real_pair(make_napari_viewer, case):
    """A viewer with a raw case's SHG (fixed) and H&E (moving), the dock on bundled bf-shg."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(case.fixed, name="SHG")
    viewer.add_image(case.moving, name="H&E", rgb=True)
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    return viewer, dock


def window_size(viewer) -> tuple[int, int]:
    size = viewer.window._qt_window.size()
    return size.width(), size.height()


def test_sample_pair_registers_when_clicked(make_napari_viewer, user, errors):
    viewer, dock = open_sample_pair(make_napari_viewer)
    assert statuses(dock)["register"].endswith("press Register")
    user.watch.reset()
    user.click(dock.run_panel.register_button)
    assert not dock.run_panel.register_button.enabled  # running: no second click
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    panel = dock.run_panel
    assert panel.progress.value == panel.progress.max
    assert panel.verdict.value == "✓ likely right" and panel.verdict.native.isVisible()
    error = float(panel.details.value.rsplit("known transform: ", 1)[1].split(" px")[0])
    assert error <= 0.02 * viewer.layers[0].data.shape[1]
    model = dock.session.result.transform.model
    simplest = " (the simplest that fits)" if model != "affine" else ""  # affine was asked
    assert statuses(dock)["register"] == f"2 · register: ✓ {model}{simplest}, likely right"
    # An affine result has no deformation to show: not offered, and refused without a change
    # (the view was switched to it, the review's layers hidden, before the refusal).
    view = dock.session.review_view
    assert "deformation" not in dock.review_panel.view.choices
    with pytest.raises(InputError, match="no deformation"):
        dock.session.set_review_view("deformation")
    assert dock.session.review_view == view and all(
        layer.visible for layer in dock.session.review_layers)
    viewer.add_points(name="cells")  # napari resets every dock's choices on a layer change
    assert "deformation" not in dock.review_panel.view.choices
    user.watch.check(MAX_FREEZE_S)
    user.wait(0.2)
    assert window_size(viewer) <= SCREEN  # a shown result never grows the window
    width, height = window_size(viewer)
    assert width <= SCREEN[0] and height <= SCREEN[1]


def test_points_drawn_over_the_registered_preview_are_carried_where_they_were_drawn(
        make_napari_viewer, user, errors):
    """Points clicked on the moving image while it is shown registered lie on it as shown; a
    points layer made before registering, and an image opened after it, lie on its pixels. All,
    applied moving -> fixed with the Apply button, land where the result puts them, colours kept
    (points drawn over the preview were carried twice, ~75 px off, silently)."""
    from napari_comir.core.defaults import TRUE_TRANSFORM_KEY
    from napari_comir.core.transforms import AffineTransform

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-comir", "bf_shg_pair_misaligned")
    fixed, moving = viewer.layers["SHG (sample)"], viewer.layers["BF (sample, misaligned)"]
    moving_rc = np.array([[40.0, 60.0], [150.0, 200.0], [230.0, 90.0]])
    before = viewer.add_points(moving_rc, name="made before", face_color="red")
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    user.click(dock.run_panel.register_button)
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    # A new points layer (napari's button), clicked where the moving pixels are shown now.
    drawn = viewer.add_points(name="drawn over the preview", face_color="red")
    shown = np.asarray(moving.affine.affine_matrix) @ np.c_[moving_rc, np.ones(3)].T
    for point in shown[:2].T:
        drawn.add(point)
    # A second channel of the moving image, opened after registering: on its pixels.
    channel = viewer.add_image(moving.data[..., 0], name="second channel")
    keep = dock.keep_panel
    keep.targets.value = [before, drawn, channel]
    keep.direction.value = "moving → fixed"
    user.click(keep.apply_button)
    truth = AffineTransform.from_dict(moving.metadata[TRUE_TRANSFORM_KEY])
    expected_rc = truth.apply_xy(moving_rc[:, ::-1])[:, ::-1]
    carried = [viewer.layers[f"{layer.name} (registered)"] for layer in (before, drawn)]
    assert [np.abs(layer.data - expected_rc).max() <= 1.0 for layer in carried] == [True, True]
    assert all(np.allclose(layer.face_color, [1, 0, 0, 1]) for layer in carried)
    from napari_comir.core.background import background_value
    from napari_comir.core.resampling import resample

    on_fixed = resample(moving.data[..., 0], dock.session.result.transform, fixed.data.shape,
                        cval=background_value(moving.data[..., 0]))  # a bright field: its white
    assert np.abs(viewer.layers["second channel (registered)"].data.astype(float)
                  - on_fixed).mean() < 1.0
    assert keep.status.value.startswith("✓ added")
    assert fixed.visible


def test_long_layer_names_do_not_widen_the_dock_past_a_laptop_screen(make_napari_viewer, pair,
                                                                     user):
    """Choice boxes as wide as a long file name made the dock's rows wider than its 1280 x 800
    room: Stop and the progress bar were cut off behind a horizontal scroll bar."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(shg, name="sa_stroma_pancreas_2000_95_SHG_second_harmonic_generation")
    viewer.add_image(bf, name="sa_stroma_pancreas_2000_95_HE_bright_field_as_scanned", rgb=True)
    dock = open_dock(viewer)
    user.wait(0.3)
    scroll = dock.native
    assert dock.run_panel.fixed.value is not None and dock.run_panel.moving.value is not None
    assert not scroll.horizontalScrollBar().isVisible()
    assert scroll.widget().width() <= scroll.viewport().width()
    assert dock.run_panel.stop_button.native.isVisible()
    assert window_size(viewer) <= SCREEN


def test_an_image_shared_by_two_pairs_has_landmarks_for_each(make_napari_viewer, pair, user,
                                                                errors):
    """One H&E, two stains: each pair's landmarks are its own layers, and only the chosen
    pair's are shown (the other pair's points on the shared image read as this pair's)."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    fixed = viewer.add_image(shg, name="SHG")
    first, second = (viewer.add_image(bf, name=name, rgb=True) for name in ("BF", "BF 2"))
    dock = open_dock(viewer)
    dock.run_panel.fixed.value, dock.run_panel.moving.value = fixed, first
    user.click(dock.landmarks_panel.add_button)
    first_layers = [viewer.layers[name] for name in ("landmarks: SHG (↔ BF)", "landmarks: BF (↔ SHG)")]
    first_layers[0].add([20.0, 30.0])
    first_layers[1].add([22.0, 29.0])
    dock.run_panel.moving.value = second
    user.wait_until(lambda: not any(layer.visible for layer in first_layers))
    user.click(dock.landmarks_panel.add_button)
    second_layers = [viewer.layers[name] for name in ("landmarks: SHG (↔ BF 2)",
                                                      "landmarks: BF 2 (↔ SHG)")]
    assert [len(layer.data) for layer in second_layers] == [0, 0]  # not the other pair's points
    assert dock.landmarks_panel.residuals.value.startswith("pair 1: click a structure on SHG")
    dock.run_panel.moving.value = first
    user.wait_until(lambda: all(layer.visible for layer in first_layers))
    assert not any(layer.visible for layer in second_layers) and not errors


def test_landmarks_are_placed_in_turn_on_each_image_shown_alone(make_napari_viewer, pair, user,
                                                                errors):
    """"add" readies the fixed image's landmark layer (it was left in pan/zoom, the moving image
    covering the fixed one): each point placed hands over to the other image, shown alone; fit
    shows both again."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    fixed, moving = viewer.add_image(shg, name="SHG"), viewer.add_image(bf, name="BF", rgb=True)
    dock = open_dock(viewer)
    panel = dock.landmarks_panel
    user.click(panel.add_button)
    fixed_points, moving_points = (viewer.layers[name] for name in ("landmarks: SHG (↔ BF)",
                                                                     "landmarks: BF (↔ SHG)"))

    def turn():
        active = viewer.layers.selection.active
        assert active.visible and not (moving_points if active is fixed_points else fixed_points).visible
        return active.name, active.mode, fixed.visible, moving.visible

    assert turn() == ("landmarks: SHG (↔ BF)", "add", True, False)
    assert panel.residuals.value.startswith("pair 1: click a structure on SHG")
    for number, (row, col) in enumerate([(20.0, 30.0), (30.0, 32.0), (25.0, 45.0)], start=1):
        fixed_points.add([row, col])  # what a click in "add" mode does
        assert turn() == ("landmarks: BF (↔ SHG)", "add", False, True)
        assert panel.residuals.value.startswith(f"pair {number}: click the same structure on BF")
        moving_points.add([row + 2.0, col - 1.0])
        assert turn() == ("landmarks: SHG (↔ BF)", "add", True, False)
    moving_points.data = moving_points.data + 0.5  # a point dragged: the turn stays
    assert turn() == ("landmarks: SHG (↔ BF)", "add", True, False)
    user.click(panel.fit_button)
    user.wait_until(lambda: dock.session.result is not None and not dock.session.busy)
    assert fixed.visible and moving.visible and fixed_points.mode == "pan_zoom"
    assert fixed_points.visible and moving_points.visible
    # Three pairs in one corner (under 1 % of the image): the fit extrapolates everywhere else, and
    # the dock says so (it was accepted and taught from without a word, 61 px off over the tissue).
    verdict = dock.run_panel.verdict.value
    assert verdict.startswith("⚠ the landmarks cover under 1% of the moving image"), verdict
    assert dock.status["register"].value.endswith("they cover little — see below")
    # a fit to landmarks has no CoMIRs: their views are not offered, and refused saying why
    assert "CoMIRs" not in dock.review_panel.view.choices
    with pytest.raises(InputError, match="a fit to landmarks computes none"):
        dock.session.set_review_view("CoMIRs")
    result = dock.session.result
    for row, col in ((85.0, 10.0), (10.0, 85.0)):  # two more pairs, across the image
        fixed_points.add([row, col])
        moving_points.add([row + 2.0, col - 1.0])
    user.click(panel.fit_button)
    user.wait_until(lambda: dock.session.result is not result and not dock.session.busy)
    assert dock.run_panel.verdict.value.startswith("fitted to the landmarks only"), \
        dock.run_panel.verdict.value
    # not judged by the images: amber, not the green of "likely right"
    assert "#f0b030" in dock.run_panel.verdict.native.styleSheet()
    assert panel.residuals.value.endswith("px")  # each pair's residual, then the mean
    # Another pair chosen: its own state, and steps 3-4 say which pair the last result is of
    # (another pair's residuals stayed listed; Accept and Export read as if for the new pair).
    third = viewer.add_image(shg[::-1].copy(), name="SHG 2")
    dock.run_panel.fixed.value = third
    assert panel.residuals.value == "" and dock.run_panel.verdict.value == ""
    of = " (of the last result: BF onto SHG)"
    assert dock.status["review"].value.endswith(of) and dock.status["keep"].value.endswith(of)
    user.click(dock.run_panel.register_button)
    assert panel.residuals.value == ""  # not the last result's while the new pair registers
    user.wait_for_job(dock.session)
    assert not errors, errors
    # the CoMIR views offered again, in their place (they were appended after "off")
    user.wait_until(lambda: "CoMIRs" in dock.review_panel.view.choices)
    assert tuple(dock.review_panel.view.choices) == dock.session.review_views()
    assert dock.review_panel.view.choices[-1] == "off"


def test_a_stopped_registration_leaves_the_earlier_result_shown(make_napari_viewer, user, errors):
    """Register, then Register again and Stop: the dock says the earlier result stands and
    shows its verdict and numbers (it said "stopped" under a blank, while step 2 still read ✓
    and Accept kept that result)."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    run = dock.run_panel
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    result = dock.session.result
    user.click(run.register_button)
    keep = dock.keep_panel  # not for a result about to be replaced
    assert not (keep.export_button.enabled or keep.apply_button.enabled or keep.accept_button.enabled)
    user.click(run.stop_button)
    assert user.wait_for_job(dock.session).state.value == "stopped", errors
    assert dock.session.result is result
    assert run.verdict.value == "stopped; the earlier result stands: ✓ likely right"
    assert "rotation" in run.details.value and "score" in run.details.value
    assert run.progress.native.format() == "stopped" and keep.accept_button.enabled
    assert run.progress.max == 1  # not left a busy (moving) bar by a stage of one step
    assert keep.export_button.enabled and keep.apply_button.enabled


def test_nothing_takes_room_before_it_has_something_to_say(make_napari_viewer, user, errors):
    """Before the first registration an empty progress bar and empty lines under it left a band
    of the dock blank; they appear once they have news."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    run, keep = dock.run_panel, dock.keep_panel

    def shown(widget) -> bool:
        return widget.native.isVisibleTo(dock.native)

    assert not any(shown(widget) for widget in (run.progress, run.verdict, run.details, keep.status))
    assert shown(dock.status["register"]) and shown(run.register_button)
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    assert all(shown(widget) for widget in (run.progress, run.verdict, run.details))
    assert run.verdict.value.startswith("✓")


def test_step_two_says_why_the_model_differs_from_the_one_asked(viewer_with_pair, user):
    """"✓ rigid, likely right" under "affine" asked, "✓ affine" under "deformable": step 2 now
    says the simplest model that fits was kept, or that no field was."""
    from napari_comir.core.registration import RegistrationResult
    from napari_comir.core.transforms import AffineTransform
    from napari_comir.widgets import _review

    viewer = viewer_with_pair
    dock = open_dock(viewer)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    dock.run_panel.fixed.value, dock.run_panel.moving.value = fixed, moving
    shift = AffineTransform.about_center(3.0, (47.5, 47.5), (2.0, 1.0))  # rigid
    cases = (("affine", {}, "✓ rigid (the simplest that fits), likely right"),
             ("rigid", {}, "✓ rigid, likely right"),
             ("deformable", {"deformable": {"kept": False, "reasons": ["no gain"]}},
              "✓ affine (no field kept), likely right"))
    for asked, extra, header in cases:
        dock.run_panel.transform.value = asked
        transform = shift if asked != "deformable" else AffineTransform(shift.matrix_xy, "affine")
        result = RegistrationResult(transform, 0.9, 0.1, "search", {}, True, **extra)
        dock.session.show_result(result, fixed, moving, _review.review_images(fixed, moving))
        user.wait_until(lambda result=result: dock.session.result is result and not dock.session.busy)
        assert dock.status["register"].value == f"2 · register: {header}"


def test_removing_an_image_while_it_registers_stops_and_says_so(make_napari_viewer, user, errors):
    """The moving image deleted while it registers: the job stops and the dock says why (it
    stayed on "registering…" under a full progress bar, with nothing to show). The moving picker
    stays empty: it fell to another open colour image, which one more click registered."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="another colour image", rgb=True)
    run = dock.run_panel
    user.click(run.register_button)
    viewer.layers.remove("BF (sample, misaligned)")
    job = user.wait_for_job(dock.session)
    assert job.state.value == "stopped" and not errors, (job.error, errors)
    assert run.verdict.value == "⚠ stopped: 'BF (sample, misaligned)' was removed while it ran"
    assert run.register_button.enabled and dock.session.result is None
    assert run.moving.value is None and dock.session.moving is None
    assert run.fixed.value is viewer.layers["SHG (sample)"]


def test_registering_another_moving_image_puts_the_last_one_back(make_napari_viewer, user, errors):
    """A result replaced by another image's goes with its preview: the moving image it placed
    (wrongly, as like as not: the verdict said so) stayed shown out of place over the fixed one,
    its result gone."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    first = viewer.layers["BF (sample, misaligned)"]
    second = viewer.add_image(np.array(first.data), name="BF (second copy)", rgb=True)
    run = dock.run_panel
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    assert not np.allclose(first.affine.affine_matrix, np.eye(3))  # previewed
    run.moving.value = second
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    user.wait_until(lambda: dock.session.result_pair == (viewer.layers["SHG (sample)"], second))
    assert np.allclose(first.affine.affine_matrix, np.eye(3)) and not errors
    assert not np.allclose(second.affine.affine_matrix, np.eye(3))


def test_removing_the_fixed_image_in_a_long_stage_stops_without_a_crash(make_napari_viewer, raw_cases,
                                                                       user, errors, qtbot):
    """The fixed image deleted while the deformable stage runs (the job stops only at its next
    event): napari crashed (segmentation fault) drawing the canvas after its warning toast; the
    dock's verdict line says why it stopped, no toast."""
    viewer, dock = open_real_pair(make_napari_viewer, raw_cases["X01Y05"])
    run = dock.run_panel
    run.transform.value = "deformable"
    user.click(run.register_button)
    user.wait_until(lambda: dock.session.last_event is not None
                    and dock.session.last_event.stage == "deformable")
    viewer.layers.remove("SHG")
    assert dock.session.busy  # still in the stage
    qtbot.wait(500)  # the canvas drawn, the job not yet at its next event
    job = user.wait_for_job(dock.session)
    assert job.state.value == "stopped" and not errors, (job.error, errors)
    assert run.verdict.value == "⚠ stopped: 'SHG' was removed while it ran"
    assert dock.session.result is None and run.register_button.enabled


def test_deleting_the_moving_image_after_a_deformable_result_does_not_crash(make_napari_viewer, raw_cases,
                                                                             user, errors):
    """The moving image deleted once a deformable result is shown (its review layers over the
    fixed image, the moving one placed by the affine part): napari crashed (segmentation fault)
    drawing the canvas after the session removed the review layers in the same turn of the event
    loop; they go one per turn now, and the canvas is drawn."""
    viewer, dock = open_real_pair(make_napari_viewer, raw_cases["X01Y05"])
    run = dock.run_panel
    run.transform.value = "deformable"
    user.click(run.register_button)
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    review = list(dock.session.review_layers)
    assert review and all(layer in viewer.layers for layer in review)
    viewer.layers.remove("H&E")
    user.wait_until(lambda: not any(layer in viewer.layers for layer in review))
    viewer.window._qt_window.grab()  # the canvas drawn
    assert [layer.name for layer in viewer.layers] == ["SHG"] and dock.session.result is None
    assert not errors


def test_a_pair_refused_at_once_is_named_by_step_two(make_napari_viewer, user, errors):
    """A 3-D stack chosen as moving: step 2 said "press Register" until Register was refused
    with the reason in red; it says so as soon as the stack is chosen. A pair refused at once
    for another reason (refine from landmarks never placed) is named too, until another pair
    is chosen."""
    viewer = make_napari_viewer(show=True)
    shg = viewer.add_image(np.random.default_rng(0).random((96, 96), np.float32), name="SHG")
    stack = viewer.add_image(np.zeros((5, 96, 96), np.float32), name="stack")
    bf = viewer.add_image(np.zeros((96, 96, 3), np.uint8), name="BF", rgb=True)
    dock = open_dock(viewer)
    run = dock.run_panel
    run.fixed.value, run.moving.value = shg, stack
    assert dock.status["register"].value == "2 · register: ⚠ 'stack' is 3-D: take a 2-D slice of it first"
    user.click(run.register_button)
    assert run.verdict.value.startswith("⚠ layer 'stack' has shape (5, 96, 96)") and errors
    run.moving.value = bf
    assert dock.status["register"].value.endswith("press Register")
    user.click(dock.landmarks_panel.register_button)  # refine from landmarks: none placed
    assert run.verdict.value == "⚠ add the landmark layers first, then click matching structures in both"
    assert dock.status["register"].value == "2 · register: ⚠ cannot register this pair — see below"
    run.moving.value = stack
    run.moving.value = bf
    assert dock.status["register"].value.endswith("press Register")


def test_an_image_too_small_fails_saying_why_and_step_two_says_so(make_napari_viewer, pair, user,
                                                                   errors):
    """A 20 x 20 px fixed image: the registration fails with the reason, in red, as a
    notification, and step 2 says it failed (it still read "…; press Register" above the red
    line); another pair chosen is a fresh start."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    dock = open_dock(viewer)
    run = dock.run_panel
    tiny = viewer.add_image(shg[:20, :20].copy(), name="tiny")
    run.fixed.value = tiny
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "failed"
    assert run.verdict.value.startswith("⚠ failed: fixed image is too small to register: 20x20")
    assert errors and errors[-1].startswith("Register: ")
    assert dock.status["register"].value == "2 · register: ⚠ failed — see below"
    run.fixed.value = viewer.layers["SHG"]
    assert dock.status["register"].value.endswith("press Register")


def test_step_two_follows_the_pixel_sizes_set_after_the_pair_is_chosen(make_napari_viewer, pair):
    """Pixel sizes set on the layers (their scale) once the pair is chosen: step 2 says them,
    fixed and moving (it kept "scale searched")."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    dock = open_dock(viewer)
    assert dock.status["register"].value == ("2 · register: scale searched (no pixel sizes); "
                                             "press Register")
    viewer.layers["SHG"].scale = (0.5, 0.5)
    viewer.layers["BF"].scale = (0.25, 0.25)
    assert dock.status["register"].value == ("2 · register: fixed 0.5, moving 0.25 µm/px; "
                                             "press Register")


def test_review_layers_stay_under_what_was_drawn(make_napari_viewer, pair, user, errors):
    """The opaque review layers go over the images, under points and shapes: points placed
    before registering were hidden under them, and a second registration slid the review pair
    around a layer applied in between (green above it, magenta below)."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    marks = viewer.add_points(np.array([[20.0, 30.0]]), name="marks")
    dock = open_dock(viewer)
    review = ["review: BF (magenta)", "review: SHG (green)"]
    for _ in range(2):
        user.click(dock.run_panel.register_button)
        assert user.wait_for_job(dock.session).state.value == "finished", errors
        names = [layer.name for layer in viewer.layers]
        assert names[names.index(review[0]) + 1] == review[1]
        assert names.index(review[1]) < names.index("marks")
        dock.keep_panel.targets.value = [marks]
        user.click(dock.keep_panel.apply_button)
    # the second apply took the first one's place
    assert [layer.name for layer in viewer.layers][-2:] == ["marks", "marks (registered)"]
    assert "marks (registered) [1]" not in viewer.layers


def test_pixel_sizes_typed_in_the_dock_are_registered_with(make_napari_viewer, raw_cases, user,
                                                           errors):
    """A microscopist with two JPEGs types the pixel sizes in the dock (napari's layer controls
    have no field for them): they become the layers' scale, step 2 says them, the registration
    uses them (the shift in µm), and changing one afterwards keeps the result (it maps pixels) and
    lays its review out again on the images' new grids."""
    case = raw_cases["X01Y05"]
    viewer, dock = open_real_pair(make_napari_viewer, case)
    run = dock.run_panel
    assert [box.native.text() for box in run.sizes.values()] == ["fixed: unknown", "moving: unknown"]
    ratio = float(np.sqrt(np.linalg.det(case.truth.matrix_xy[:2, :2])))
    for role, layer, size in (("fixed", "SHG", 0.5), ("moving", "H&E", round(0.5 * ratio, 4))):
        # typed as a person types: each keystroke was applied (0, 4, 44, ... µm/px: 144 in the end)
        box = run.sizes[role].native
        box.setFocus()
        box.selectAll()
        before = tuple(viewer.layers[layer].scale)
        user.qtbot.keyClicks(box, f"{size:g}")
        assert tuple(viewer.layers[layer].scale) == before  # nothing applied while typing
        user.qtbot.keyClick(box, Qt.Key.Key_Return)
        assert tuple(viewer.layers[layer].scale) == pytest.approx((size, size))
    assert tuple(viewer.layers["SHG"].scale) == (0.5, 0.5)
    assert dock.status["register"].value == (f"2 · register: fixed 0.5, moving {round(0.5 * ratio, 4):g}"
                                             " µm/px; press Register")
    user.click(run.register_button)
    assert not run.sizes["fixed"].enabled  # not while it registers with them
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    assert case.error(dock.session.result.transform) <= 3.0 and "µm)" in run.details.value
    assert run.sizes["fixed"].enabled
    result = dock.session.result
    run.sizes["fixed"].value = 0.25
    assert dock.session.result is result
    assert tuple(viewer.layers["review: SHG (green)"].scale) == pytest.approx((0.25, 0.25), rel=0.01)
    assert np.allclose(viewer.layers["review: H&E (magenta)"].affine.affine_matrix,
                       viewer.layers["H&E"].affine.affine_matrix)  # over the image it shows
    # ... and step 2 says it was found with other sizes (it read "✓ likely right" as if checked)
    assert dock.status["register"].value.endswith(
        "with other pixel sizes: Register to check it with these")
    # Sizes that cannot fit: Register fails, and step 2 and the verdict say so until the sizes
    # change, an Accept of the earlier result included (both read "✓ likely right" again)
    run.sizes["fixed"].value = 0.05
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "failed"
    assert dock.status["register"].value == "2 · register: ⚠ failed — see below"
    refusal = run.verdict.value
    assert refusal.startswith("⚠ failed") and "pixel sizes" in refusal
    user.click(dock.keep_panel.accept_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    assert run.verdict.value == refusal
    assert dock.status["register"].value == "2 · register: ⚠ cannot register this pair — see below"
    run.sizes["fixed"].value = 0.5
    assert dock.status["register"].value.startswith("2 · register: ✓")


def test_a_dock_opened_again_shows_the_result_its_session_holds(make_napari_viewer, user, errors):
    """The dock closed while it registers and opened again from the menu: the new dock shows the
    finished result, its verdict and numbers, and can accept, export and review it (it showed
    step 2 "✓" over an empty verdict and disabled buttons)."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    user.click(dock.run_panel.register_button)
    viewer.window.remove_dock_widget(dock.native)
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    user.wait_until(lambda: dock.session.result is not None and not dock.session.busy)
    again = open_dock(viewer)
    assert again is not dock and again.session is dock.session
    assert again.run_panel.verdict.value == "✓ likely right"
    assert "rotation" in again.run_panel.details.value
    keep = again.keep_panel
    assert keep.accept_button.enabled and keep.export_button.enabled and keep.apply_button.enabled
    assert again.review_panel.view.enabled and again.review_panel.view.value == "overlay"
    assert again.status["register"].value.startswith("2 · register: ✓")


def test_a_closed_dock_does_not_trip_over_images_opened_later(make_napari_viewer, pair, user,
                                                             errors):
    """A dock closed (its widget lives on, hidden) and opened again; every layer deleted at once
    with the review layers among them, then images opened: no error (the hidden dock's pickers
    were set to layers they did not list yet, and napari's deletion tripped over the review
    layers the session removed meanwhile)."""
    bf, shg = pair
    viewer, dock = open_sample_pair(make_napari_viewer)
    user.click(dock.run_panel.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    user.wait_until(lambda: dock.session.review_layers and not dock.session.busy)
    viewer.window.remove_dock_widget(dock.native)
    again = open_dock(viewer)
    viewer.layers.select_all()
    viewer.layers.remove_selected()  # the layer list's trash button
    user.wait(0.2)
    assert len(viewer.layers) == 0 and not errors, errors
    fixed, moving = viewer.add_image(shg, name="SHG"), viewer.add_image(bf, name="BF", rgb=True)
    user.wait(0.2)
    assert not errors, errors
    assert (again.run_panel.fixed.value, again.run_panel.moving.value) == (fixed, moving)
    assert again.status["register"].value.endswith("press Register")


def test_a_model_for_two_bright_fields_picks_the_pair_by_colour_and_name(make_napari_viewer, pair,
                                                                         user):
    """H&E and IHC (both RGB) opened while bf-shg (grey fixed) is the model: nothing fits its
    fixed network. Picking he-ihc guesses again: the layer named for its fixed modality (he) is
    fixed, the other moving (they stayed empty and backwards)."""
    bf, _ = pair
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    viewer.add_image(bf, name="lung-lesion_3_Ki67-7-les3", rgb=True)
    viewer.add_image(bf[::-1].copy(), name="lung-lesion_3_He-les3", rgb=True)
    run = dock.run_panel
    assert run.fixed.value is None  # bf-shg's fixed network takes grey images only
    # said before Register is pressed, and again when it is: what fits, and what to do
    hint = ("⚠ no open image pair fits bf-shg (its fixed network 'shg' takes grey images): pick "
            "he-ihc (it takes them) under model, or choose the images, place landmarks, fit, "
            "Accept and teach a model for them (step 5)")
    assert run.verdict.value == hint
    user.click(run.register_button)
    assert run.verdict.value == hint
    dock.model_name.value = "he-ihc"
    user.wait(0.1)
    assert (run.fixed.value.name, run.moving.value.name) == ("lung-lesion_3_He-les3",
                                                             "lung-lesion_3_Ki67-7-les3")
    assert run.verdict.value == ""  # the problem was the earlier pair's (it stayed, in red)
    assert dock.status["register"].value.endswith("press Register")
    viewer.layers.remove("lung-lesion_3_He-les3")  # the fixed image: its picker empties (both
    assert (run.fixed.value, run.moving.value) == (None, viewer.layers[0])  # showed the other)


def test_images_opened_one_by_one_are_paired_as_the_model_takes_them(make_napari_viewer, pair,
                                                                     user):
    """he-ihc chosen, then the IHC image opened before the H&E (as a multi-select opens them,
    alphabetically): the IHC took the fixed picker and the H&E could not be moving, so one
    picker stayed empty; now the pair is guessed whole: H&E fixed, IHC moving."""
    bf, _ = pair
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    dock.model_name.value = "he-ihc"
    ihc = viewer.add_image(bf, name="lung-lesion_3_CD31-3-les3", rgb=True)
    he = viewer.add_image(bf[::-1].copy(), name="lung-lesion_3_He-les3", rgb=True)
    user.wait(0.1)
    assert (dock.run_panel.fixed.value, dock.run_panel.moving.value) == (he, ihc)
    assert dock.status["register"].value.endswith("press Register")


def test_deleting_the_accepted_layer_is_noticed_and_the_teach_name_follows_the_pair(
        make_napari_viewer, pair, user, errors):
    """napari hands the dock a proxy of the viewer, whose layers are new proxies at every look-up:
    the accepted layer deleted went unnoticed ("✓ kept as ...", teach enabled on nothing). The
    teach name filled in for one kept pair followed it to the next pair."""
    viewer, dock = open_sample_pair(make_napari_viewer)
    user.click(dock.run_panel.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    assert statuses(dock)["keep"].startswith("4 · keep: ✓ kept as")
    first_name = dock.teach_panel.save_as.value
    assert "BF" in first_name and "SHG" not in first_name  # the moving image's: what is new
    viewer.layers.remove(dock.session.accepted.name)
    assert dock.session.accepted is None
    assert not statuses(dock)["keep"].startswith("4 · keep: ✓")
    assert "kept as" not in dock.keep_panel.status.value  # not under "4 · keep: Accept ..."
    assert not dock.teach_panel.teach_button.enabled
    # Another pair kept: the name follows it (none typed).
    bf, shg = pair
    viewer.add_image(shg, name="second SHG")
    viewer.add_image(bf, name="second H&E", rgb=True)
    run = dock.run_panel
    run.fixed.value, run.moving.value = viewer.layers["second SHG"], viewer.layers["second H&E"]
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    assert dock.teach_panel.save_as.value != first_name
    assert "second" in dock.teach_panel.save_as.value


def test_teaching_learns_the_kept_pair_not_a_later_result(make_napari_viewer, user, errors,
                                                          monkeypatch):
    """A pair kept, then another registered and not kept: teach learned the later one (a result
    the person had rejected) while the panel promised the kept pair."""
    from napari_comir.widgets import session as session_module

    viewer, dock = open_sample_pair(make_napari_viewer)
    run = dock.run_panel
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    kept = dock.session.result
    rng = np.random.default_rng(0)
    noise = viewer.add_image(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), name="noise", rgb=True)
    run.moving.value = noise
    user.click(run.register_button)
    assert user.wait_for_job(dock.session).state.value == "finished", errors
    assert dock.session.result is not kept
    dock.review_panel.view.value = "off"  # it said "accepted: ..." of the kept pair here
    assert dock.review_panel.subject.value.startswith("SHG (sample) (fixed) and noise (moving)")
    teach = dock.teach_panel
    assert teach.status.value == "ready to teach on the kept pair ('BF (sample, misaligned) (registered)')"
    assert "BF" in teach.save_as.value and "noise" not in teach.save_as.value
    taught_pairs = []
    real_teach = session_module.api.teach

    def recording_teach(pairs, **options):
        taught_pairs.extend(pairs)
        return real_teach(pairs, **options)

    monkeypatch.setattr(session_module.api, "teach", recording_teach)
    bar = []  # the progress bar at every event: it went back as the steps that fit were re-timed
    dock.session.changed.connect(lambda what: bar.append(teach.progress.value / teach.progress.max)
                                 if what == "event" and teach.progress.max else None)
    teach.seconds.value = 60
    viewer.window._qt_window.resize(1280, 800)
    dock.native.verticalScrollBar().setValue(0)  # the dock scrolled to its first steps
    user.click(teach.teach_button)
    user.wait_until(lambda: len(teach.loss_plot.values) >= 3, 120)
    # scrolled to the panel: its progress, curve and Stop were below the fold
    user.wait_until(lambda: teach.native.visibleRegion().boundingRect() == teach.native.rect(), 10)
    # The heading says it runs (it read "fine-tune the model on the kept pair" throughout); the
    # loss as a curve and its mean (one step's loss jumps about), the time left of the time given.
    assert statuses(dock)["teach"] == "5 · teach: teaching… (progress and Stop below)"
    assert teach.loss_plot.isVisible() and "(mean of the last" in teach.status.value
    assert teach.status.value.endswith("left, then a check")
    user.click(teach.stop_button)
    assert user.wait_for_job(dock.session, 120).state.value == "stopped"
    assert statuses(dock)["teach"] == "5 · teach: stopped: nothing saved, still using bf-shg"
    assert len(bar) >= 3 and bar == sorted(bar), bar
    (pair,) = taught_pairs
    assert pair.name == "BF (sample, misaligned) on SHG (sample)"
    assert np.allclose(pair.transform.matrix_xy, kept.transform.matrix_xy)


def test_two_docks_of_a_viewer_show_one_pair_and_warn_once(make_napari_viewer, pair, user,
                                                            monkeypatch):
    """Every dock of a viewer shares one session: a pair chosen in the expert dock shows in the
    guided dock's pickers (it kept its own, and its Register ran the other dock's pair), and a
    probably-wrong result is announced once, not once per dock."""
    from napari_comir.widgets import session as session_module

    warnings = []
    monkeypatch.setattr(session_module, "show_warning", warnings.append, raising=False)
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(shg, name="SHG")
    viewer.add_image(bf, name="BF", rgb=True)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 256, bf.shape, dtype=np.uint8), name="noise", rgb=True)
    guided = open_dock(viewer)
    guided.model_name.value = "bf-shg"
    _, expert = viewer.window.add_plugin_dock_widget("napari-comir", "Register (CoMIR)")
    assert guided.session is expert.session
    expert.run_panel.moving.value = viewer.layers["noise"]
    assert guided.run_panel.moving.value.name == "noise"
    assert guided.status["register"].value.endswith("press Register")
    user.click(guided.run_panel.register_button)
    assert user.wait_for_job(guided.session).state.value == "finished"
    assert guided.session.result_pair[1].name == "noise"
    assert not guided.session.result.success_likely
    assert len(warnings) == 1 and "probably WRONG" in warnings[0]


def test_a_model_whose_moving_network_takes_colour_does_not_guess_a_grey_moving_image(
        make_napari_viewer, pair):
    """he-ihc takes two bright fields: with an H&E and a grey SHG open, the H&E is its fixed
    image and no moving image is guessed (the grey SHG was, and Register then failed)."""
    bf, shg = pair
    viewer = make_napari_viewer(show=True)
    viewer.add_image(shg, name="SHG")
    viewer.add_image(bf, name="H&E", rgb=True)
    dock = open_dock(viewer)
    dock.model_name.value = "he-ihc"
    assert dock.run_panel.fixed.value.name == "H&E" and dock.run_panel.moving.value is None


def test_large_pair_takes_the_coarse_to_fine_route_when_clicked(make_napari_viewer, user, errors):
    """Images over 1536 px register through an overview and full-resolution windows: the dock
    shows the verdict and the overlay; the CoMIRs view, which needs full-size CoMIRs this route
    does not make, is not offered, and says why when asked for, leaving the overlay on."""
    from napari_comir.core.synthetic import misaligned_pair
    from napari_comir.core.transforms import corner_error

    bf, shg, truth = misaligned_pair((1600, 1600), seed=4, angle_deg=-40.0)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(shg, name="SHG")
    viewer.add_image(bf, name="BF", rgb=True)
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    user.watch.reset()
    user.click(dock.run_panel.register_button)
    job = user.wait_for_job(dock.session, timeout_s=120)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    assert dock.session.result.method == "pyramid"
    assert corner_error(truth, dock.session.result.transform, bf.shape[:2]) <= 1.0
    assert dock.run_panel.verdict.value == "✓ likely right"
    assert [layer.name for layer in viewer.layers][-2:] == ["review: BF (magenta)", "review: SHG (green)"]
    user.watch.check(MAX_FREEZE_S)
    assert "CoMIRs" not in dock.review_panel.view.choices
    with pytest.raises(InputError, match="coarse to fine"):
        dock.session.set_review_view("CoMIRs")
    assert dock.review_panel.view.value == dock.session.review_view == "overlay"


def test_real_pair_register_accept_export_teach(make_napari_viewer, raw_cases, user, errors,
                                                tmp_path):
    case = raw_cases["sa_stroma_pancreas_2000_95"]
    viewer, dock = open_real_pair(make_napari_viewer, case)
    assert _state.state_for(viewer).model.card.name == "bf-shg"
    user.watch.reset()
    user.click(dock.run_panel.register_button)
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    session = dock.session
    assert case.error(session.result.transform) <= 3.0
    assert dock.run_panel.verdict.value == "✓ likely right"
    assert [layer.name for layer in viewer.layers][-2:] == ["review: H&E (magenta)",
                                                            "review: SHG (green)"]
    user.watch.check(MAX_FREEZE_S)

    # Keep: a new layer (the user's untouched), the overlay off, the keep step says so.
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    assert session.accepted.name == "H&E (registered)" and "H&E" in viewer.layers
    assert session.review_view == "off" and dock.review_panel.view.value == "off"
    assert statuses(dock)["keep"] == "4 · keep: ✓ kept as 'H&E (registered)'"
    assert all(not layer.visible for layer in session.review_layers)
    path = dock.keep_panel.export_transform(tmp_path / "t.json")
    assert "decomposition" in json.loads(path.read_text())
    # Derived layers are not offered as targets of "apply to".
    assert dock.keep_panel.targets.choices == ()

    # Teach: a few seconds on the kept pair; the taught model is used here, the default is not.
    assert not dock.teach_panel.modalities.visible  # bf-shg taught further keeps its modalities
    default_before = _state.ModelState.default_name()
    dock.teach_panel.seconds.value = 5
    dock.teach_panel.save_as.value = "taught-here"
    user.click(dock.teach_panel.teach_button)
    job = user.wait_for_job(session, 120)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    assert session.models.source == "taught-here" and "taught-here" in dock.model_name.choices
    assert dock.model_name.value == "taught-here"
    assert _state.ModelState.default_name() == default_before  # nothing changed silently
    assert "saved 'taught-here'" in dock.teach_panel.status.value
    user.watch.check(MAX_FREEZE_S)
    # Another pair chosen: step 4 says which pair it kept (it read as if of the new pair)
    dock.run_panel.fixed.value = viewer.add_image(case.fixed[::-1].copy(), name="SHG 2")
    assert statuses(dock)["keep"] == ("4 · keep: ✓ kept as 'H&E (registered)' (of the last "
                                      "result: H&E onto SHG)")


@pytest.mark.slow
def test_teaching_bf_shg_a_grey_bright_field_teaches_its_grey_route(make_napari_viewer, raw_cases,
                                                                    user, errors):
    """The same clicks with the H&E in grey: the taught model differs from bf-shg only in its
    grey palette, so colour images register as before."""
    import torch

    case = raw_cases["sa_stroma_pancreas_2000_95"]
    viewer = make_napari_viewer(show=True)
    viewer.add_image(case.fixed, name="SHG")
    viewer.add_image((case.moving @ np.array([0.299, 0.587, 0.114])).astype(np.uint8), name="H&E grey")
    dock = open_dock(viewer)
    dock.model_name.value = "bf-shg"
    bundled = _state.state_for(viewer).model
    user.click(dock.run_panel.register_button)
    job = user.wait_for_job(dock.session)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    assert case.error(dock.session.result.transform) <= 3.0
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    dock.teach_panel.seconds.value = 30
    dock.teach_panel.save_as.value = "grey-taught"
    user.watch.reset()
    user.click(dock.teach_panel.teach_button)
    job = user.wait_for_job(dock.session, 180)
    assert job.state.value == "finished" and not errors, (job.error, errors)
    assert "saved 'grey-taught'" in dock.teach_panel.status.value
    taught = dock.session.models.get()
    assert taught.card.training["taught"] == "grey palette of bf"
    assert taught.card.modalities["bf"].grey_palette != bundled.card.modalities["bf"].grey_palette
    assert all(torch.equal(value, bundled.state_dict()[key])
               for key, value in taught.state_dict().items())
    user.watch.check(MAX_FREEZE_S)


def _shows_all_layers(viewer) -> bool:
    """Whether every layer lies inside the canvas as the camera shows it."""
    camera = viewer.scene.camera
    half = np.asarray(viewer.canvas.size) / (2 * camera.zoom)  # (height, width) canvas px
    low, high = np.asarray(viewer.layers.extent.world)[:, -2:]
    centre = np.asarray(camera.center)[-2:]
    return bool(np.all(low >= centre - half) and np.all(high <= centre + half))


def test_opening_the_dock_fits_the_images_to_the_canvas_it_leaves(make_napari_viewer, user):
    """The first dock takes its room from the canvas: the images were cut off at its edge
    (napari had fitted the first to the canvas before the window was laid out, and a second
    image 3 px wider stuck out of it). A view a person zoomed into is kept."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*SCREEN)
    # As the shared sections are: napari fits the first only, the second sticks out a little.
    viewer.add_image(np.zeros((661, 892), np.uint8), name="H&E")
    viewer.add_image(np.zeros((660, 895), np.uint8), name="CD31")
    user.wait(1.0)
    width = viewer.canvas.size[1]
    open_dock(viewer)
    user.wait_until(lambda: viewer.canvas.size[1] < width)  # the dock took its room
    user.wait(0.5)
    assert _shows_all_layers(viewer)
    viewer.window.remove_dock_widget("all")
    user.wait(0.3)
    viewer.reset_view()
    camera = viewer.scene.camera
    camera.zoom *= 3
    zoomed = (camera.zoom, tuple(camera.center))
    open_dock(viewer)
    user.wait(0.5)
    assert (camera.zoom, tuple(camera.center)) == zoomed


def test_expert_docks_open_as_tabs_and_the_window_keeps_its_size(make_napari_viewer, user):
    """Docks opened one after another (as the menu opens them, without napari's tabify) share
    one tabbed area instead of pushing each other off a 1280 x 800 screen, and every tab reads
    whole (napari's "<widget> (napari-comir)" titles were cut to "CoM…" side by side)."""
    from qtpy.QtWidgets import QDockWidget, QTabBar

    from napari_comir.widgets._docking import _marked

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-comir", "bf_shg_pair_misaligned")
    dock = open_dock(viewer)
    for name in ("CoMIR model", "Fine-tune CoMIR", "CoMIR representations", "Register (CoMIR)",
                 "Inspect CoMIRs"):
        viewer.window.add_plugin_dock_widget("napari-comir", name)
    user.wait(0.5)
    window = viewer.window._qt_window
    ours = [dock for dock in window.findChildren(QDockWidget)
            if dock.widget() is not None and _marked(dock.widget())]
    assert len(ours) == 6
    assert len(window.tabifiedDockWidgets(ours[0])) == 5
    assert window_size(viewer) == SCREEN
    tabs = next(bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count() == 6)
    titles = [tabs.tabText(index) for index in range(6)]
    assert titles == ["Guided", "Model", "Fine-tune", "CoMIRs", "Register", "Inspect"]
    for index, title in enumerate(titles):  # room for the whole word: not elided
        assert tabs.tabRect(index).width() > tabs.fontMetrics().horizontalAdvance(title), title
    # The guided dock at its narrowest, with a scroll bar: its pixel-size boxes read whole
    # ("ınknown" beside ± buttons, tabbed at 1280 x 800).
    from qtpy.QtCore import Qt

    from napari_comir.widgets._docking import DOCK_MIN_WIDTH

    tabs.setCurrentIndex(0)
    window.resizeDocks([ours[0]], [DOCK_MIN_WIDTH], Qt.Orientation.Horizontal)
    dock.native.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
    user.wait(0.5)
    for box in dock.run_panel.sizes.values():
        assert box.native.width() >= box.native.sizeHint().width(), box.native.specialValueText()


def test_a_new_modality_pair_taught_from_landmarks(make_napari_viewer, user, errors):
    """Two bright fields (RGB against RGB), which the viewer's model cannot take: landmarks,
    fit, Accept, teach — a new model for the pair's channels, checked before it is used."""
    from napari_comir.core.resampling import resample
    from napari_comir.core.synthetic import synthetic_pair
    from napari_comir.core.transforms import AffineTransform

    bf, _ = synthetic_pair((160, 160), 0)
    other_stain = (255 - (255 - bf.astype(float))[..., ::-1] * 0.8).astype(np.uint8)
    known = AffineTransform.about_center(6.0, (79.5, 79.5), (3.0, -2.0))
    moved = resample(other_stain, known.inverse(), bf.shape[:2])
    viewer = make_napari_viewer(show=True)
    viewer.add_image(bf, name="H&E", rgb=True)
    viewer.add_image(moved, name="IHC", rgb=True)
    dock = open_dock(viewer)
    run = dock.run_panel
    run.fixed.value, run.moving.value = viewer.layers["H&E"], viewer.layers["IHC"]
    user.click(dock.landmarks_panel.add_button)
    moving_rc = np.array([[25.0, 30.0], [120.0, 35.0], [60.0, 130.0], [130.0, 125.0], [50.0, 80.0]])
    viewer.layers["landmarks: IHC (↔ H&E)"].data = moving_rc
    viewer.layers["landmarks: H&E (↔ IHC)"].data = known.apply_rc(moving_rc)
    user.click(dock.landmarks_panel.fit_button)
    user.wait_until(lambda: dock.session.result is not None and not dock.session.busy)
    user.click(dock.keep_panel.accept_button)
    user.wait_for_job(dock.session)
    teach = dock.teach_panel
    assert teach.teach_button.enabled
    assert teach.save_as.value == "taught-IHC"  # a new model: not named after bf-shg
    # Its modalities named after the images (they read "moving → fixed" in the model's name)
    assert teach.modalities.visible
    assert (teach.fixed_modality.value, teach.moving_modality.value) == ("he", "ihc")
    # A model whose networks take the pair, picked now: taught further, no new modalities (the
    # row and the name followed the model only at the next Accept)
    dock.model_name.value = "he-ihc"
    assert not teach.modalities.visible and teach.save_as.value == "he-ihc-IHC"
    dock.model_name.value = "bf-shg"
    assert teach.modalities.visible and teach.save_as.value == "taught-IHC"
    teach.moving_modality.value = "ihc.x"
    user.click(teach.teach_button)
    assert teach.status.value.startswith("⚠ a modality's name is a word") and not dock.session.busy
    teach.moving_modality.value = "ihc"
    teach.seconds.value, teach.save_as.value = 5, "he-ihc-here"
    user.click(teach.teach_button)
    job = user.wait_for_job(dock.session, 180)
    assert job.state.value == "finished", (job.error, errors)
    outcome, saved = job.result
    card = outcome.model.card
    assert (card.fixed_modality, card.moving_modality) == ("he", "ihc")
    assert [card.modalities[m].channels for m in (card.fixed_modality, card.moving_modality)] == [3, 3]
    assert ("✓ saved 'he-ihc-here'" if saved else "⚠ not saved") in teach.status.value
    # the step's heading agrees (it read "✓ now using bf-shg" over a refused model)
    in_use = dock.session.models.source
    assert dock.status["teach"].value == ("5 · teach: ✓ now using he-ihc-here" if saved else
                                          f"5 · teach: ⚠ nothing saved, still using {in_use} (why: below)")
    assert (dock.session.models.source == "he-ihc-here") == saved


def test_a_new_pairs_modalities_are_named_by_the_words_its_images_do_not_share():
    from napari_comir.widgets._teach_panel import modality_names

    assert modality_names("lung-lesion_3_He-les3", "lung-lesion_3_CD31-3-les3") == ("he", "cd31")
    assert modality_names("SHG", "H&E") == ("shg", "he")
    assert modality_names("img", "img copy") == ("fixed", "moving")  # nothing of its own
    assert modality_names("scan 1", "scan 2") == ("fixed", "moving")  # numbers name no modality
