"""A deformable registration of two whole slides, clicked through the guided dock as a person
does: the verdict of the field stage, the review warped through the field on a coarse level,
the deformation view, Accept writing the slide, and Export."""

import numpy as np
import pytest

from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform
from napari_comir.core.field_transform import resample as resample_field
from napari_comir.core.io.transform_formats import read_transform
from napari_comir.core.registration.levels import to_level
from napari_comir.core.resampling import resample
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.core.tiled_resample import resample_to_file
from napari_comir.core.transforms import AffineTransform
from napari_comir.widgets import _layers, _review

pytestmark = pytest.mark.gui

SIDE = 1600  # levels 1600 and 800 px; the review is made from the 800 px one (REVIEW_SIDE below)
# The deformable stage follows displacements up to its search radius on its work level: 8 px of
# the 400 px block mean of these 1600 px slides, 32 px here (a 40 px bend, the B-spline's test,
# came to 3.4 px, median; docs/benchmarks.md, "Block matching").
BEND_PX = 32.0


@pytest.fixture(scope="module")
def bent_slides(tmp_path_factory):
    """fixed.ome.tif (SHG) and moving.ome.tif (BF, rotated, shifted and bent by a smooth field up
    to :data:`BEND_PX`), pyramidal, 2 µm px; ``true_xy`` maps moving (x, y) onto the fixed."""
    folder = tmp_path_factory.mktemp("bent_slides")
    bf, shg, truth = misaligned_pair((SIDE, SIDE), seed=3, angle_deg=6.0, translation_xy=(12.0, -8.0))
    bend = smooth_deformation(shg.shape, BEND_PX, np.random.default_rng(5), smoothness_px=128.0,
                              spacing_px=16.0)
    bent = resample_field(bf, bend.inverse(), bf.shape[:2], cval=255)
    for name, image in (("moving", bent), ("fixed", shg)):
        for _ in resample_to_file(image, AffineTransform.rigid(), image.shape[:2],
                                  folder / f"{name}.ome.tif", pixel_size_um=2.0):
            pass
    return folder, bent, lambda xy: truth.apply_xy(bend.apply_xy(xy)), truth


def _ncc(a, b):
    a, b = (np.asarray(x, float) - np.mean(x) for x in (a, b))
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_guided_dock_registers_slides_deformably(guided_dock_on_slides, bent_slides, tmp_path,
                                                 monkeypatch, errors, user):
    folder, bent, true_xy, truth = bent_slides
    monkeypatch.setattr(_layers, "REVIEW_SIDE", SIDE // 2)  # review a coarse level, as on a real slide
    viewer, fixed, moving, dock = guided_dock_on_slides(folder)
    run = dock.run_panel
    run.transform.value = "deformable"
    run.rotation.value = 30
    user.watch.reset()
    user.click(run.register_button)
    job = user.wait_for_job(dock.session, 120)
    assert job.state.value == "finished", (job.error, errors)
    user.watch.check(user.slide_paint_limit_s)
    session = dock.session
    result = session.result
    stage = result.deformable
    # The field stage's verdict is in the dock: kept, or why the affine stands.
    assert stage is not None and result.success_likely
    assert stage["kept"], stage["reasons"]  # a bend no affine map follows: the field is kept
    assert "deformable: kept, points moved" in run.details.value
    assert "px on average over the overlap" in run.details.value
    assert f"{stage['matched_share']:.0%} of blocks matched (" in run.details.value
    assert run.verdict.value.startswith("✓")
    found = result.transform
    assert isinstance(found, DisplacementFieldTransform)
    moving_xy = np.random.default_rng(6).uniform(200, SIDE - 200, size=(300, 2))
    error = np.linalg.norm(found.apply_xy(moving_xy) - true_xy(moving_xy), axis=1)
    affine_error = np.linalg.norm(found.affine.apply_xy(moving_xy) - true_xy(moving_xy), axis=1)
    assert np.median(error) < 3.0 < 2 * 3.0 < np.median(affine_error), (
        np.median(error), np.median(affine_error))

    # Review: both layers on the 800 px level over the fixed slide, the moving one already warped
    # through the field onto it (no layer affine).
    review_fixed, review_moving = session.review_layers
    for layer in (review_fixed, review_moving):
        assert not layer.multiscale and layer.data.shape == (SIDE // 2, SIDE // 2)
        # level pixel i: slide pixels 2i, 2i + 1 (2 µm each): centred at 2 µm * (2i + 0.5)
        assert np.allclose(layer.scale, (4.0, 4.0)) and np.allclose(layer.translate, (1.0, 1.0))
    assert review_moving.metadata["comir_on_fixed"]
    assert np.allclose(review_moving.affine.affine_matrix, np.eye(3))
    # Where the field matters (the affine part alone misses by over 8 px), the overlay agrees with
    # the fixed slide's level far better than the affine part's would.
    affine_only = _review.review_images(fixed, moving, None)
    affine_warp = resample(affine_only["moving"], to_level(found.affine, 2, 2),
                           affine_only["fixed"].shape)
    rows, cols = np.indices((SIDE // 2, SIDE // 2))
    fixed_xy = np.stack([2 * cols + 0.5, 2 * rows + 0.5], -1).reshape(-1, 2)  # at level 0
    miss = np.linalg.norm(found.inverse().apply_xy(fixed_xy) -
                          found.affine.inverse().apply_xy(fixed_xy), axis=1).reshape(rows.shape)
    where = (miss > 8.0) & (affine_warp > 0)
    where[:40], where[-40:], where[:, :40], where[:, -40:] = False, False, False, False
    assert where.sum() > 2000
    with_field = _ncc(review_moving.data[where], review_fixed.data[where])
    with_affine = _ncc(affine_warp[where], review_fixed.data[where])
    assert with_field > 0.55 and with_field > with_affine + 0.3, (with_field, with_affine)

    # Before: the moving review layer unwarped, where the moving slide lies; after: warped again.
    warped = review_moving.data.copy()
    dock.review_panel.after.value = False
    review_moving = viewer.layers[review_moving.name]
    assert not review_moving.metadata["comir_on_fixed"]
    assert np.array_equal(review_moving.data, affine_only["moving"])
    assert np.allclose(review_moving.affine.affine_matrix, moving.affine.affine_matrix)
    dock.review_panel.after.value = True
    assert review_moving.metadata["comir_on_fixed"] and np.array_equal(review_moving.data, warped)
    assert np.allclose(review_moving.affine.affine_matrix, np.eye(3))

    # The deformation view: the field's nodes over the fixed slide, as far as it moved points.
    dock.review_panel.view.value = "deformation"
    deformation = viewer.layers[_review.DEFORMATION]
    assert deformation.visible and deformation.colorbar.visible  # px, read off the colour bar
    assert deformation.data.max() == pytest.approx(found.displacement_magnitude().max(), rel=1e-5)
    assert np.allclose(deformation.scale, 2.0 * found.spacing_px)  # µm between nodes
    dock.review_panel.view.value = "checkerboard"  # warped through the field on the coarse level
    assert viewer.layers[_review.CHECKERBOARD].data.shape[:2] == (SIDE // 2, SIDE // 2)
    dock.review_panel.view.value = "overlay"

    # Accept: the moving slide written through the field tile by tile, opened as a new layer.
    layer = user.accept_slide(dock, tmp_path / "moving_registered.ome.tif", errors, SIDE)
    keep = dock.keep_panel
    assert isinstance(DisplacementFieldTransform.from_dict(layer.metadata["comir_transform"]),
                      DisplacementFieldTransform)
    window = (slice(700, 900), slice(500, 700))
    expected = resample_field(bent, found, (SIDE, SIDE))[window]
    # the accepted RGB slide's tiles are JPEG (the default for bright field): close, not equal
    assert np.abs(np.asarray(layer.data[0][window]).astype(float) - expected).mean() < 3.0
    assert dock.status["keep"].value == "4 · keep: ✓ kept as 'moving (registered)'"

    # Export, as for an affine slide result: the ITK file reads back as the found transform.
    for name in ("t.json", "t.tfm"):
        assert keep.export_transform(tmp_path / name).is_file()
    back = read_transform(tmp_path / "t.tfm")
    np.testing.assert_allclose(back.apply_xy(moving_xy), found.apply_xy(moving_xy), atol=0.05)
    assert not errors
