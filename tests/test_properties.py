"""Property-based tests: transform algebra, decomposition and serialisation (rigid, similarity,
affine), and registration of a real SHG image under random rigid transforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_comir.core.registration import register
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform, corner_error

angles = st.floats(-180.0, 180.0, exclude_max=True, allow_nan=False)
shifts = st.floats(-1e3, 1e3, allow_nan=False)
scales = st.floats(0.3, 3.0)
shears = st.floats(-0.5, 0.5)


def _affine(angle, scale_x, scale_y, shear, tx, ty):
    matrix = np.eye(3)
    matrix[:2, :2] = (AffineTransform.rigid(angle).matrix_xy[:2, :2] @ np.diag([scale_x, scale_y])
                      @ np.array([[1.0, shear], [0.0, 1.0]]))
    matrix[:2, 2] = tx, ty
    return AffineTransform(matrix)


transforms = st.one_of(
    st.builds(AffineTransform.rigid, angles, st.tuples(shifts, shifts)),
    st.builds(AffineTransform.similarity, angles, scales, st.tuples(shifts, shifts)),
    st.builds(_affine, angles, scales, scales, shears, shifts, shifts),
)
points = st.lists(st.tuples(shifts, shifts), min_size=1, max_size=5).map(np.array)


def _close(a: AffineTransform, b: AffineTransform) -> bool:
    return np.allclose(a.matrix_xy, b.matrix_xy, atol=1e-7, rtol=1e-7)


@given(transforms)
def test_inverse_undoes_and_is_an_involution(t):
    identity = AffineTransform.rigid()
    assert _close(t.compose(t.inverse()), identity)
    assert _close(t.inverse().compose(t), identity)
    assert _close(t.inverse().inverse(), t)


@given(transforms, transforms, transforms)
def test_compose_is_associative_and_a_matrix_product(a, b, c):
    assert _close(a.compose(b).compose(c), a.compose(b.compose(c)))
    assert np.allclose(a.compose(b).matrix_xy, a.matrix_xy @ b.matrix_xy, atol=1e-7)
    assert -180.0 <= a.compose(b).angle_deg < 180.0


@given(transforms, transforms, points)
def test_compose_applies_other_first(a, b, pts):
    assert np.allclose(a.compose(b).apply_xy(pts), a.apply_xy(b.apply_xy(pts)), atol=1e-6)


@given(angles, scales, scales, shears, shifts, shifts, st.tuples(shifts, shifts))
def test_decomposition_rebuilds_the_matrix(angle, scale_x, scale_y, shear, tx, ty, centre):
    t = _affine(angle, scale_x, scale_y, shear, tx, ty)
    parts = t.decompose(centre)
    assert parts.angle_deg == pytest.approx(angle, abs=1e-6) or abs(abs(angle) - 180) < 1e-6
    assert np.allclose(parts.scale_xy, (scale_x, scale_y))
    assert parts.shear == pytest.approx(shear, abs=1e-9)
    about_centre = _affine(parts.angle_deg, *parts.scale_xy, parts.shear, 0.0, 0.0)
    probe = np.array([[0.0, 0.0], [100.0, -50.0]])
    rebuilt = about_centre.apply_xy(probe - centre) + np.asarray(centre) + parts.shift_xy
    np.testing.assert_allclose(rebuilt, t.apply_xy(probe), atol=1e-6)


@given(transforms, points)
def test_rc_and_xy_frames_agree(t, pts):
    assert np.allclose(t.apply_rc(pts[:, ::-1]), t.apply_xy(pts)[:, ::-1], atol=1e-9)
    assert _close(AffineTransform.from_matrix_rc(t.matrix_rc), t)


@given(transforms)
def test_json_dict_and_csv_round_trips(t):
    assert _close(AffineTransform.from_json(t.to_json()), t)
    assert _close(AffineTransform.from_dict(t.to_dict()), t)
    if t.model == "rigid":
        assert _close(AffineTransform.from_dict({"angle_deg": t.angle_deg,
                                                "translation_xy": list(t.translation_xy)}), t)
    assert _close(AffineTransform.from_csv(t.to_csv()), t)
    assert _close(AffineTransform.from_matrix_xy(t.matrix_xy[:2]), t)


@given(st.integers(0, 3), st.integers(-5, 5), st.integers(-5, 5), st.integers(8, 23),
       st.integers(8, 23))
def test_resample_moves_a_pixel_where_the_transform_says(quarter_turns, dx, dy, row, col):
    """Quarter turns about the centre and whole-pixel shifts resample exactly (no blur)."""
    moving = np.zeros((32, 32), np.uint8)
    moving[row, col] = 255
    t = AffineTransform.about_center(90.0 * quarter_turns, (15.5, 15.5), (dx, dy))
    out = resample(moving, t, (48, 48))
    expected = np.rint(t.apply_rc([row, col])[0]).astype(int)
    assert out[tuple(expected)] == 255 and out.sum() == 255


@pytest.fixture(scope="module")
def shg_256(bf_shg_dir):
    """A real SHG image, 2x block-averaged to 256 x 256 to keep registration fast."""
    from napari_comir.core.io import read_image

    shg = read_image(bf_shg_dir / "X02Y08_SHG.tif").astype(np.float32)
    return shg.reshape(256, 2, 256, 2).mean(axis=(1, 3))


@settings(max_examples=8, deadline=None, derandomize=True)
@given(angle=angles, tx=st.floats(-20, 20), ty=st.floats(-20, 20))
def test_register_recovers_random_rigid_transforms_of_a_real_shg_image(shg_256, angle, tx, ty):
    rows, cols = shg_256.shape
    true = AffineTransform.about_center(angle, ((cols - 1) / 2, (rows - 1) / 2), (tx, ty))
    # moving[p] = fixed[true(p)]: ``true`` maps the moving image onto the fixed one.
    moving = resample(shg_256, true.inverse(), shg_256.shape)
    found = register(shg_256, moving, device="cpu").transform
    assert corner_error(true, found, moving.shape) <= 0.02 * cols
