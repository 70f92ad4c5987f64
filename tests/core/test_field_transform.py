"""DisplacementFieldTransform: both directions, resampling, folds, JSON/NPZ round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.field_transform import (
    DisplacementFieldTransform,
    grid_shape,
    node_positions_xy,
    resample,
)
from napari_comir.core.resampling import resample as resample_affine
from napari_comir.core.transforms import AffineTransform

SHAPE = (120, 160)
SPACING = 4.0
AFFINE = AffineTransform.about_center(3.0, (80, 60), (2.5, -1.5), scale=1.02)


def smooth_field(amplitude=5.0, shape=SHAPE, spacing=SPACING):
    """A smooth (rows, cols, 2) displacement: one period of a sine over the image."""
    nodes = node_positions_xy(grid_shape(shape, spacing), spacing)
    x, y = nodes[..., 0] / shape[1], nodes[..., 1] / shape[0]
    return np.stack([amplitude * np.sin(2 * np.pi * y), amplitude * np.cos(np.pi * x) * np.sin(np.pi * y)],
                    axis=-1)


def field_transform(amplitude=5.0):
    return DisplacementFieldTransform.from_displacement(AFFINE, smooth_field(amplitude), SPACING)


def test_a_zero_field_is_the_affine_transform():
    t = DisplacementFieldTransform.from_displacement(AFFINE, np.zeros(grid_shape(SHAPE, SPACING) + (2,)),
                                                     SPACING)
    points = np.array([[0.0, 0.0], [100.5, 33.25], [159.0, 119.0]])
    np.testing.assert_allclose(t.apply_xy(points), AFFINE.apply_xy(points), atol=1e-9)
    np.testing.assert_allclose(t.inverse().apply_xy(points), AFFINE.inverse().apply_xy(points), atol=1e-9)
    image = np.random.default_rng(0).random(SHAPE)
    np.testing.assert_allclose(resample(image, t, SHAPE), resample_affine(image, AFFINE, SHAPE), atol=1e-9)


def test_points_go_there_and_back():
    t = field_transform()
    moving = np.random.default_rng(1).uniform([10, 10], [150, 110], size=(50, 2))
    fixed = t.apply_xy(moving)
    # The displacement really moves points (beyond the affine part) ...
    assert np.abs(fixed - AFFINE.apply_xy(moving)).max() > 2.0
    # ... and the inverse field brings them back.
    np.testing.assert_allclose(t.inverse().apply_xy(fixed), moving, atol=0.05)
    np.testing.assert_allclose(t.apply_rc(moving[:, ::-1]), fixed[:, ::-1])
    # fixed -> moving is A^-1(p + u(p)) by definition
    p = np.array([[40.0, 60.0]])
    u = smooth_field()[15, 10]  # node (row 15, col 10) is at x = 40, y = 60
    np.testing.assert_allclose(t.inverse().apply_xy(p), AFFINE.inverse().apply_xy(p + u), atol=1e-9)


def test_resampling_reads_where_the_inverse_sends_each_pixel():
    t = field_transform()
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    moving = np.sin(rows / 9.0) + np.cos(cols / 7.0)  # smooth: bilinear reading is near exact
    warped = resample(moving, t, SHAPE, preserve_dtype=False)
    sources = t.inverse().apply_xy(np.stack([cols.ravel(), rows.ravel()], 1).astype(float))
    expected = np.sin(sources[:, 1] / 9.0) + np.cos(sources[:, 0] / 7.0)
    inside = ((sources >= 0) & (sources <= [SHAPE[1] - 1, SHAPE[0] - 1])).all(axis=1)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(warped.ravel()[inside], expected[inside], atol=0.01)
    # Labels stay labels; the inverse direction resamples onto the moving grid.
    labels = (moving > 0.5).astype(np.uint16) * 7
    assert set(np.unique(resample(labels, t, SHAPE, order=0))) <= {0, 7}
    assert resample(warped, t.inverse(), SHAPE).shape == SHAPE


def test_json_and_npz_round_trips_keep_both_directions(tmp_path):
    t = field_transform()
    points = np.array([[20.0, 30.0], [140.0, 100.0]])
    read = [DisplacementFieldTransform.from_dict(json.loads(t.to_json())),
            DisplacementFieldTransform.from_npz(t.to_npz_bytes())]
    (tmp_path / "t.npz").write_bytes(t.to_npz_bytes())
    read.append(DisplacementFieldTransform.from_npz(tmp_path / "t.npz"))
    for other in read:
        np.testing.assert_allclose(other.apply_xy(points), t.apply_xy(points), atol=1e-3)
        np.testing.assert_allclose(other.inverse().apply_xy(points), t.inverse().apply_xy(points),
                                   atol=1e-3)
    d = t.to_dict((80, 60))
    assert d["transform"] == "deformable" and d["affine"]["transform"] == "similarity"
    assert 4.5 < d["max_displacement_px"] <= 5.0 * np.sqrt(2) and d["min_jacobian"] > 0


def test_a_folding_field_is_refused_and_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match="cannot be inverted"):
        field_transform(amplitude=40.0)  # |grad u| > 1: the field folds
    assert field_transform(amplitude=40.0 / 1e3).min_jacobian > 0.99
    with pytest.raises(InputError, match="shape"):
        DisplacementFieldTransform(AFFINE, np.zeros((4, 4)), np.zeros((4, 4)), 4.0)
    with pytest.raises(InputError, match="deformable"):
        DisplacementFieldTransform.from_dict({"transform": "affine"})
    with pytest.raises(InputError, match="one direction"):
        field_transform().inverse().to_dict()
    with pytest.raises(InputError, match="npz"):
        DisplacementFieldTransform.from_npz(b"not an npz")
