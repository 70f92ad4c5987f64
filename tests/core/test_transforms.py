"""AffineTransform conventions, serialisation, resample, and agreement with skimage and napari."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.transform import EuclideanTransform, warp

from napari_comir.core.errors import InputError
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform, corner_error

T = AffineTransform.rigid(37.0, (12.5, -7.25))


def test_positive_angle_turns_x_axis_towards_y_down():
    # (1, 0) -> (0, 1): with y pointing down this is clockwise on screen.
    np.testing.assert_allclose(AffineTransform.rigid(90.0).apply_xy([1.0, 0.0]), [[0.0, 1.0]], atol=1e-12)


def test_matrix_rc_is_matrix_xy_with_axes_swapped():
    pts_xy = np.array([[3.0, 4.0], [-2.0, 10.0], [0.0, 0.0]])
    np.testing.assert_allclose(T.apply_rc(pts_xy[:, ::-1]), T.apply_xy(pts_xy)[:, ::-1])
    homog_rc = np.c_[pts_xy[:, ::-1], np.ones(3)]
    np.testing.assert_allclose((homog_rc @ T.matrix_rc.T)[:, :2], T.apply_rc(pts_xy[:, ::-1]))


@pytest.mark.parametrize(
    "build",
    [
        lambda t: AffineTransform.from_matrix_xy(t.matrix_xy),
        lambda t: AffineTransform.from_matrix_xy(t.matrix_xy[:2]),
        lambda t: AffineTransform.from_matrix_rc(t.matrix_rc),
        lambda t: AffineTransform.from_dict(t.to_dict()),
        lambda t: AffineTransform.from_dict(
            {"angle_deg": t.angle_deg, "translation_xy": t.translation_xy}
        ),
        lambda t: AffineTransform.from_json(t.to_json()),
        lambda t: AffineTransform.from_csv(t.to_csv()),
    ],
)
def test_round_trips(build):
    back = build(T)
    assert back.angle_deg == pytest.approx(T.angle_deg)
    np.testing.assert_allclose(back.translation_xy, T.translation_xy)


def test_file_round_trips(tmp_path):
    T.to_json(tmp_path / "t.json")
    T.to_csv(tmp_path / "t.csv")
    for back in (
        AffineTransform.from_json(tmp_path / "t.json"),
        AffineTransform.from_csv(str(tmp_path / "t.csv")),
    ):
        np.testing.assert_allclose(back.matrix_xy, T.matrix_xy)
    header, values = (tmp_path / "t.csv").read_text().splitlines()
    assert header.startswith("transform,angle_deg,scale_x,scale_y,shear,tx,ty,m00")
    assert values.startswith("rigid,")


@pytest.mark.parametrize(
    ("matrix", "loosest_rejected"),
    [
        (np.diag([2.0, 2.0, 1.0]), "rigid"),  # isotropic scale
        ([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]], "similarity"),  # shear
        (np.diag([1.2, 0.9, 1.0]), "similarity"),  # stretch
        (np.diag([-1.0, 1.0, 1.0]), "similarity"),  # mirror
    ],
)
def test_models_check_their_constraints(matrix, loosest_rejected):
    models = ("rigid", "similarity", "affine")
    for model in models[: models.index(loosest_rejected) + 1]:
        with pytest.raises(InputError, match=f"not a {model}"):
            AffineTransform(matrix, model)
    inferred = AffineTransform.from_matrix_xy(matrix)
    assert inferred.model == models[models.index(loosest_rejected) + 1]
    np.testing.assert_allclose(inferred.matrix_xy, matrix)


@pytest.mark.parametrize(
    "bad",
    [
        [[1, 0, 0], [0, 1, 0], [0.1, 0, 1]],  # projective
        np.eye(4),
        [[np.nan, 0, 0], [0, 1, 0]],
        [[1, 2, 0], [2, 4, 0], [0, 0, 1]],  # singular
    ],
)
def test_unusable_matrices_are_rejected(bad):
    with pytest.raises(InputError):
        AffineTransform.from_matrix_xy(bad)


def test_decomposition_reads_back_rotation_scale_shear_and_centre_shift():
    angle, sx, sy, shear = 17.0, 1.12, 0.93, 0.05
    rotation = AffineTransform.rigid(angle).matrix_xy[:2, :2]
    linear = rotation @ np.diag([sx, sy]) @ np.array([[1.0, shear], [0.0, 1.0]])
    centre = np.array([255.5, 199.5])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + (7.0, -3.0) - linear @ centre  # the centre moves by (7, -3)
    parts = AffineTransform(matrix).decompose(centre)
    assert parts.angle_deg == pytest.approx(angle)
    np.testing.assert_allclose(parts.scale_xy, (sx, sy))
    assert parts.shear == pytest.approx(shear)
    np.testing.assert_allclose(parts.shift_xy, (7.0, -3.0))
    similar = AffineTransform.about_center(-30.0, centre, (2.0, 1.0), scale=0.9)
    assert similar.model == "similarity"
    parts = similar.decompose(centre)
    np.testing.assert_allclose((parts.angle_deg, *parts.scale_xy, parts.shear, *parts.shift_xy),
                               (-30.0, 0.9, 0.9, 0.0, 2.0, 1.0), atol=1e-12)


def test_json_carries_model_and_decomposition():
    t = AffineTransform([[1.1, 0.02, 5.0], [-0.01, 0.95, -2.0]])
    d = json.loads(t.to_json(center_xy=(10.0, 20.0)))
    assert d["transform"] == "affine"
    assert set(d["decomposition"]) >= {"angle_deg", "scale_xy", "shear", "shift_xy"}
    back = AffineTransform.from_json(json.dumps(d))
    assert back.model == "affine"
    np.testing.assert_allclose(back.matrix_xy, t.matrix_xy)
    np.testing.assert_allclose(AffineTransform.from_csv(t.to_csv()).matrix_xy, t.matrix_xy)


def test_bad_files_and_dicts_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        AffineTransform.from_dict({"angle_deg": 3})
    with pytest.raises(InputError):
        AffineTransform.from_json(tmp_path / "missing.json")
    with pytest.raises(InputError):
        AffineTransform.from_json("{not json")
    with pytest.raises(InputError):
        AffineTransform.from_csv("angle_deg,tx\n1,2\n")


def test_inverse_compose_and_about_center():
    a, b = T, AffineTransform.rigid(-120.0, (3.0, 4.0))
    pts = np.random.default_rng(0).normal(size=(5, 2)) * 50
    np.testing.assert_allclose(a.compose(b).apply_xy(pts), a.apply_xy(b.apply_xy(pts)))
    np.testing.assert_allclose(a.compose(a.inverse()).matrix_xy, np.eye(3), atol=1e-12)
    c = AffineTransform.about_center(33.0, (10.0, 20.0), (1.0, 2.0))
    np.testing.assert_allclose(c.apply_xy([10.0, 20.0]), [[11.0, 22.0]])


def test_corner_error():
    assert corner_error(T, T, (50, 80)) == pytest.approx(0.0)
    shifted = AffineTransform.rigid(0, (3, 4))
    assert corner_error(AffineTransform.rigid(), shifted, (50, 80)) == pytest.approx(5.0)


def _bright_pixel_image(shape=(40, 50), rc=(12, 31)):
    img = np.zeros(shape)
    img[rc] = 1.0
    return img


def _argmax_rc(img):
    return np.array(np.unravel_index(np.argmax(img), img.shape), dtype=float)


def test_resample_puts_a_pixel_where_the_transform_sends_it():
    t = AffineTransform.rigid(90.0, (40.0, 5.0))  # integer-exact destination
    moving = _bright_pixel_image()
    out = resample(moving, t, (60, 70), order=0)
    np.testing.assert_allclose(_argmax_rc(out), t.apply_rc([12, 31])[0])


def test_resample_channels_dtype_and_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(30, 40)).astype(np.uint16)
    out = resample(labels, T, (35, 45), order=0)
    assert out.dtype == np.uint16 and set(np.unique(out)) <= set(range(5))
    rgb = rng.random((30, 40, 3)).astype(np.float32)
    out = resample(rgb, AffineTransform.rigid(), (30, 40))
    assert out.shape == (30, 40, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, rgb, atol=1e-6)
    with pytest.raises(InputError):
        resample(np.zeros((2, 3, 4, 5)), T, (3, 3))


def test_agrees_with_skimage():
    t = AffineTransform.rigid(-23.0, (6.3, -2.2))
    pts = np.random.default_rng(2).random((10, 2)) * 60
    np.testing.assert_allclose(EuclideanTransform(matrix=t.matrix_xy)(pts), t.apply_xy(pts))
    moving = np.random.default_rng(3).random((64, 64))
    ours = resample(moving, t, (64, 64), order=1)
    theirs = warp(
        moving,
        EuclideanTransform(matrix=t.matrix_xy).inverse,
        output_shape=(64, 64),
        order=1,
        mode="constant",
        cval=0.0,
    )
    # Compare where the source point lies inside the moving image (edge handling differs).
    rr, cc = np.mgrid[:64, :64]
    src = t.inverse().apply_rc(np.c_[rr.ravel(), cc.ravel()]).reshape(64, 64, 2)
    inside = np.all((src >= 1) & (src <= 62), axis=-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-6)


def test_matrix_rc_is_napari_affine():
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    t = AffineTransform.rigid(90.0, (40.0, 5.0))
    moving = _bright_pixel_image()
    viewer = ViewerModel()
    viewer.add_image(np.zeros((60, 70)), name="fixed")
    layer = viewer.add_image(moving, name="moving", affine=t.matrix_rc)
    world = np.asarray(layer.data_to_world([12, 31]), dtype=float)
    fixed_layer = viewer.layers["fixed"]
    fixed_rc = np.asarray(fixed_layer.world_to_data(world), dtype=float)
    out = resample(moving, t, (60, 70), order=0)
    np.testing.assert_allclose(fixed_rc, _argmax_rc(out), atol=1e-9)
    # A non-90-degree angle: napari and resample agree for arbitrary points too.
    t2 = AffineTransform.rigid(-31.0, (7.5, 3.25))
    layer.affine = t2.matrix_rc
    pts = np.array([[3.0, 4.0], [20.5, 11.0]])
    np.testing.assert_allclose([layer.data_to_world(p) for p in pts], t2.apply_rc(pts), atol=1e-9)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("origin", ["centre", "corner"])
def test_from_coordinate_transform_undoes_coordinate_transform(inverse, origin):
    from napari_comir.core.coordinate_frames import coordinate_transform, from_coordinate_transform

    transform = AffineTransform.from_matrix_xy([[0.97, 0.08, 12.5], [-0.11, 1.04, -7.25], [0, 0, 1]])
    sizes = dict(moving_pixel_size=(0.5, 0.45), fixed_pixel_size=0.8)
    matrix = coordinate_transform(transform, inverse=inverse, origin=origin, **sizes).matrix_xy
    back = from_coordinate_transform(matrix, inverse=inverse, origin=origin, **sizes)
    np.testing.assert_allclose(back.matrix_xy, transform.matrix_xy, atol=1e-12)
