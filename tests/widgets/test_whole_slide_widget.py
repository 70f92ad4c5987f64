"""The guided dock on whole slides: multiscale layers registered coarse to fine, reviewed on a
coarse level, accepted into a written pyramid opened as a new multiscale layer."""

import time
from pathlib import Path

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.registration.levels import to_level
from napari_comir.core.resampling import resample
from napari_comir.core.review import review_channels
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.core.tiled_resample import resample_to_file
from napari_comir.core.transforms import AffineTransform, corner_error
from napari_comir.widgets import _review, _slide_output
from napari_comir.widgets._layers import (
    coarse_view,
    image_data,
    registration_data,
)

pytestmark = pytest.mark.gui

SIDE = 2304  # levels 2304, 1152, 576 px: the review uses the 1152 px one


@pytest.fixture(scope="module")
def slide_pair(tmp_path_factory):
    """fixed.ome.tif (SHG) and moving.ome.tif (BF, moved by a known rigid transform), pyramidal."""
    folder = tmp_path_factory.mktemp("slides")
    bf, shg, truth = misaligned_pair((SIDE, SIDE), seed=1, angle_deg=8.0,
                                     translation_xy=(40.0, -25.0))
    for name, image in (("moving", bf), ("fixed", shg)):
        for _ in resample_to_file(image, AffineTransform.rigid(), image.shape[:2],
                                  folder / f"{name}.ome.tif", pixel_size_um=1.0, compression="zlib"):
            pass
    return folder, bf, truth


def test_coarse_view_lies_over_the_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    full = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    half = full.reshape(32, 2, 24, 2).mean(axis=(1, 3))
    layer = viewer.add_image([full, half], multiscale=True, scale=(0.5, 0.5), translate=(10, 20))
    data, grid, d = coarse_view(layer, max_side=40)
    assert d == 2 and data.shape == (32, 24)
    # coarse pixel 0 is the mean of full pixels 0 and 1: centred at full 0.5 -> world 10.25
    assert grid == {"scale": (1.0, 1.0), "translate": (10.25, 20.25)}
    with pytest.raises(InputError, match="whole slide"):
        image_data(layer)
    slide = registration_data(layer)
    assert slide.downsamples == [1, 2] and slide.pixel_size_um == 0.5
    t = AffineTransform.rigid(3.0, (4.0, -2.0))
    coarse = to_level(t, 2, 2)
    point = np.array([[5.0, 7.0]])  # a coarse moving pixel, through full resolution
    expected = (t.apply_xy(point * 2 + 0.5) - 0.5) / 2
    assert np.allclose(coarse.apply_xy(point), expected)


def test_guided_dock_registers_reviews_and_accepts_slides(guided_dock_on_slides, slide_pair,
                                                          tmp_path, errors, user):
    folder, bf, truth = slide_pair
    viewer, fixed, moving, dock = guided_dock_on_slides(folder)
    assert fixed.multiscale and moving.multiscale and moving.rgb
    run = dock.run_panel
    assert dock.status["register"].value.endswith("whole slides (coarse to fine): press Register")
    assert dock.keep_panel.accept_button.text == "Accept (save slide…)"  # said before a result too
    run.transform.value = "rigid"
    run.rotation.value = 30
    user.click(run.register_button)
    job = user.wait_for_job(dock.session, 120)
    assert job.state.value == "finished", (job.error, errors)
    # Software OpenGL (Xvfb's llvmpipe) paints the slides' textures on the GUI thread: profiled,
    # napari's paint events, not this plugin's code, take the rest of the second.
    user.watch.check(user.slide_paint_limit_s)
    session = dock.session
    found = session.result.transform
    assert corner_error(truth, found, (SIDE, SIDE)) < 3.0
    assert session.result.success_likely

    # Review layers: made from the 1152 px level, placed exactly over the slides.
    review_fixed, review_moving = viewer.layers[-1], viewer.layers[-2]
    assert review_fixed.name == "review: fixed (green)"
    assert review_moving.name == "review: moving (magenta)"
    for layer in (review_fixed, review_moving):
        assert not layer.multiscale and layer.data.shape == (SIDE // 2, SIDE // 2)
        assert np.allclose(layer.scale, (2.0, 2.0)) and np.allclose(layer.translate, (0.5, 0.5))
    # the moving review goes through the moving slide's affine: coarse pixel -> fixed world
    world = review_moving._data_to_world(np.array([100.0, 200.0]))
    expected_rc = found.apply_rc(np.array([[100.0 * 2 + 0.5, 200.0 * 2 + 0.5]]))[0]
    assert np.allclose(world, expected_rc, atol=1e-6)
    assert np.allclose(moving.affine.affine_matrix, found.matrix_rc)
    dock.review_panel.view.value = "checkerboard"  # the checkerboard on the coarse level too
    assert viewer.layers[_review.CHECKERBOARD].data.shape[:2] == (SIDE // 2, SIDE // 2)
    # no CoMIRs are kept for slides: their views are not offered, and refused saying why
    assert "agreement" not in dock.review_panel.view.choices
    with pytest.raises(InputError, match="no CoMIRs to compare: this pair was registered coarse"):
        dock.session.set_review_view("agreement")
    assert dock.review_panel.view.value == "checkerboard"
    dock.review_panel.view.value = "overlay"

    # Accept: the moving slide resampled tile by tile into a pyramid (in a worker), opened as a
    # new layer.
    layer = user.accept_slide(dock, tmp_path / "moving_registered.ome.tif", errors, SIDE)
    keep = dock.keep_panel
    assert "comir_transform" in layer.metadata
    assert moving in viewer.layers and not moving.visible  # the user's layer kept, hidden
    window = (slice(1000, 1128), slice(1100, 1228))
    expected = resample(bf, found, (SIDE, SIDE))[window]
    # the accepted RGB slide's tiles are JPEG (the default for bright field): close, not equal
    assert np.abs(np.asarray(layer.data[0][window]).astype(float) - expected).mean() < 3.0
    assert "moving_registered.ome.tif" in keep.status.value
    assert dock.status["keep"].value == "4 · keep: ✓ kept as 'moving (registered)'"
    # Teach is for images in memory.
    assert not dock.teach_panel.teach_button.enabled
    assert "crop a region" in dock.teach_panel.status.value
    # Accepting again never replaces the first copy.
    keep.output_path = tmp_path / "again.ome.tif"
    user.click(keep.accept_button)
    user.wait_for_job(session, 120)
    assert session.accepted.name == "moving (registered 2)"
    # Never onto a file an open layer shows: the slide itself, or an earlier Accept's.
    for shown, name in ((moving.source.path, "moving"), (tmp_path / "moving_registered.ome.tif",
                                                         "moving (registered)")):
        before = Path(shown).read_bytes()
        keep.output_path = shown
        user.click(keep.accept_button)
        assert session.job_kind != "accept" or not session.busy
        assert f"is the input layer {name!r}: it would be overwritten" in keep.status.value
        assert Path(shown).read_bytes() == before
    # The save dialog proposes a name no file has.
    taken = _slide_output.default_output(moving)
    assert taken.name == "moving_registered.ome.tif" and taken.parent == Path(moving.source.path).parent
    taken.write_bytes(b"")
    try:
        assert _slide_output.default_output(moving).name == "moving_registered_2.ome.tif"
    finally:
        taken.unlink()


def test_a_slides_register_shows_its_windows_and_stops_between_them(guided_dock_on_slides, slide_pair,
                                                                     errors, user, monkeypatch):
    """A whole slide's Register showed a busy bar for its whole minute and stopped 34 s after
    Stop was clicked: it reports the overview and each window now, and stops between them."""
    from napari_comir.core import pyramid

    folder, _, _ = slide_pair
    viewer, _, _, dock = guided_dock_on_slides(folder)
    run, session = dock.run_panel, dock.session
    computed, compute = [], pyramid.compute_comir_pair

    def slow_pair(*args):  # a window as slow as a scanner-sized slide's
        computed.append(args[1].shape)
        time.sleep(0.5)
        return compute(*args)

    monkeypatch.setattr(pyramid, "compute_comir_pair", slow_pair)
    run.transform.value, run.rotation.value = "rigid", 30
    user.click(run.register_button)
    user.wait_until(lambda: session.last_event is not None and "window 1 of" in session.last_event.message,
                    60)
    total = session.last_event.total
    assert total >= 3 and "overview: " in session.last_event.message
    assert run.progress.max == total  # a bar of steps, not a busy bar
    user.click(run.stop_button)
    job = user.wait_for_job(session, 10)
    assert job.state.value == "stopped", (job.error, errors)
    assert len(computed) < total  # the overview and at most the window under way
    assert session.result is None


def test_stop_while_a_slide_is_written_leaves_no_file(guided_dock_on_slides, slide_pair, tmp_path,
                                                     errors, user, monkeypatch):
    """Stop clicked while Accept writes the registered slide: the job stops, no file and no
    temporary data are left, the writing thread has ended, and the user's layers are as they were."""
    import threading

    from napari_comir.core import tiled_resample

    folder, _, _ = slide_pair
    viewer, _, _, dock = guided_dock_on_slides(folder)
    run, keep, session = dock.run_panel, dock.keep_panel, dock.session
    run.transform.value, run.rotation.value = "rigid", 30
    user.click(run.register_button)
    assert user.wait_for_job(session, 120).state.value == "finished", errors

    resample_tile = tiled_resample._resample_tile

    def slow_tile(*args):  # a tile as slow as a scanner-sized slide's many
        time.sleep(0.3)
        return resample_tile(*args)

    monkeypatch.setattr(tiled_resample, "_resample_tile", slow_tile)
    output = tmp_path / "out" / "stopped.ome.tif"
    output.parent.mkdir()
    keep.output_path = output
    layers_before = [layer.name for layer in viewer.layers]
    user.click(keep.accept_button)
    user.wait_until(lambda: session.last_event is not None and session.last_event.stage == "resample"
                    and session.last_event.step > 0, 30)
    assert run.stop_button.enabled
    user.click(run.stop_button)
    job = user.wait_for_job(session, 30)
    assert job.state.value == "stopped", (job.error, errors)
    assert list(output.parent.iterdir()) == []  # neither the file nor temporary data
    assert not [thread for thread in threading.enumerate() if thread.name == "napari-comir-writer"]
    assert [layer.name for layer in viewer.layers] == layers_before and session.accepted is None
    assert keep.status.value == "stopped" and keep.accept_button.enabled

    # Kept once, then a later Accept stopped: the keep line says that one wrote nothing (it went
    # back to "✓ kept ... written to" as if the second file had been written).
    monkeypatch.setattr(tiled_resample, "_resample_tile", resample_tile)
    keep.output_path = tmp_path / "kept.ome.tif"
    user.click(keep.accept_button)
    assert user.wait_for_job(session, 120).state.value == "finished", errors
    user.wait_until(lambda: session.accepted is not None)
    monkeypatch.setattr(tiled_resample, "_resample_tile", slow_tile)
    keep.output_path = output
    user.click(keep.accept_button)
    user.wait_until(lambda: session.last_event is not None and session.last_event.stage == "resample"
                    and session.last_event.step > 0, 30)
    user.click(run.stop_button)
    assert user.wait_for_job(session, 30).state.value == "stopped"
    user.wait(0.5)
    assert keep.status.value == ("stopped: nothing written; still kept as layer 'moving (registered)', "
                                 f"written to {tmp_path / 'kept.ome.tif'}")
    assert not output.exists()


def test_a_deformable_result_of_slides_is_reviewed_between_their_coarse_levels(make_napari_viewer):
    """The overlay and the checkerboard of a whole-slide pair are warped on coarse levels: a
    level-0 field is expressed between those levels, so the review shows what the full-resolution
    warp shows, block-averaged."""
    from scipy import ndimage

    from napari_comir.core.evaluation import smooth_deformation
    from napari_comir.core.field_transform import DisplacementFieldTransform
    from napari_comir.core.field_transform import resample as resample_field
    from napari_comir.core.io.slides import block_mean

    rng = np.random.default_rng(0)
    full = ndimage.gaussian_filter(rng.random((SIDE, SIDE)), 6).astype(np.float32)
    full = (full - full.min()) / np.ptp(full)
    bend = smooth_deformation(full.shape, 12.0, rng, smoothness_px=160.0, spacing_px=16.0)
    transform = DisplacementFieldTransform.from_displacement(
        AffineTransform.rigid(1.0, (6.0, -4.0)), bend.displacement_xy, 16.0)
    viewer = make_napari_viewer()
    layers = [viewer.add_image([image, block_mean(image, 2), block_mean(image, 4)], multiscale=True,
                               name=name) for name, image in (("fixed", full), ("moving", full))]
    images = _review.review_images(*layers, transform)
    assert images["moving_on_fixed"] and images["moving"].shape == images["fixed"].shape
    d = round(SIDE / images["fixed"].shape[0])
    assert d == 2  # the 1152 px level is reviewed
    truth = block_mean(resample_field(full, transform, full.shape), d)
    _, reviewed_moving = review_channels(block_mean(full, d), block_mean(full, d), "structure")
    reviewed = resample_field(reviewed_moving, _review.field_to_levels(transform, d, d), truth.shape)
    inside = slice(80 // d, (SIDE - 80) // d)
    assert np.abs(images["moving"][inside, inside] / 255.0 - reviewed[inside, inside]).max() < 0.01
    # the review warps the coarse moving level as the full-resolution warp moves it
    coarse_warp = resample_field(block_mean(full, d), _review.field_to_levels(transform, d, d), truth.shape)
    assert np.abs(coarse_warp - truth)[inside, inside].mean() < 0.01
    board = _review.show_checkerboard(viewer, *layers, transform)
    assert board.data.shape == truth.shape
