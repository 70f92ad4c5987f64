"""Transforms written for other tools: read back by those tools' own readers, and round trips."""

import json

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.io import itk_affine, ngff_affine, qupath_affine
from napari_comir.core.io import transform_formats as tf
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform

sitk = pytest.importorskip("SimpleITK")

# Rotation + anisotropic scale + shear + shift, about the image centre (moving px -> fixed px).
SHEARED = AffineTransform.from_matrix_xy(
    AffineTransform.about_center(17.0, (40.0, 30.0), (6.5, -4.25), scale=1.1).matrix_xy
    @ np.array([[1.0, 0.08, 0.0], [0.0, 0.93, 0.0], [0.0, 0.0, 1.0]]))
# (fixed, moving) pixel sizes in µm: pixel units, non-unit equal, unequal.
PIXEL_SIZES = [(1.0, 1.0), (0.5, 0.5), (0.45, 0.8)]


def smooth_image(shape_rc, seed=0):
    """A smooth test image: a sum of broad Gaussian blobs (bilinear interpolation is near exact)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:shape_rc[0], :shape_rc[1]].astype(float)
    image = np.zeros(shape_rc)
    for _ in range(12):
        r, c = rng.uniform(0, shape_rc[0]), rng.uniform(0, shape_rc[1])
        image += rng.uniform(0.5, 1.0) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 9.0 ** 2))
    return image


def with_spacing(array, pixel_size_um):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((pixel_size_um, pixel_size_um))
    return image


@pytest.mark.parametrize(("fixed_um", "moving_um"), PIXEL_SIZES)
def test_itk_file_resamples_like_napari_comir(tmp_path, fixed_um, moving_um):
    """SimpleITK reads the file, and its resampling matches napari-comir's resample."""
    # The moving image's content scaled by the pixel-size ratio: both grids show one scene.
    transform = AffineTransform.from_matrix_xy(
        np.diag([moving_um / fixed_um, moving_um / fixed_um, 1.0]) @ SHEARED.matrix_xy)
    path = tf.write_transform(transform, tmp_path / "r.tfm", fixed_pixel_size_um=fixed_um,
                              moving_pixel_size_um=moving_um)
    assert "maps a\n# FIXED image's physical point" in path.read_text()
    itk = sitk.ReadTransform(str(path))

    # Points: ITK maps fixed physical -> moving physical; napari-comir moving px -> fixed px.
    fixed_xy = np.stack(np.meshgrid(np.arange(0, 80, 7.0), np.arange(0, 60, 7.0)), -1).reshape(-1, 2)
    moving_xy = np.array([itk.TransformPoint(tuple(p * fixed_um)) for p in fixed_xy]) / moving_um
    assert np.abs(transform.apply_xy(moving_xy) - fixed_xy).max() < 1e-9

    # Images: sitk.Resample with the spacing set on both images agrees with resample().
    moving = smooth_image((64, 88))
    fixed_shape = (60, 80)
    reference = with_spacing(np.zeros(fixed_shape), fixed_um)
    by_itk = sitk.GetArrayFromImage(sitk.Resample(with_spacing(moving, moving_um), reference, itk,
                                                  sitk.sitkLinear, 0.0))
    ours = resample(moving, transform, fixed_shape)
    # Compare where both sample well inside the moving image (the two treat the border apart).
    rows, cols = np.mgrid[:fixed_shape[0], :fixed_shape[1]]
    inside = transform.inverse().apply_xy(np.stack([cols.ravel(), rows.ravel()], 1))
    interior = ((inside[:, 0] > 1) & (inside[:, 0] < moving.shape[1] - 2) & (inside[:, 1] > 1)
                & (inside[:, 1] < moving.shape[0] - 2)).reshape(fixed_shape)
    assert interior.mean() > 0.4
    difference = np.abs(by_itk - ours)[interior].max()
    assert difference < 1e-6 * moving.max()  # both bilinear on the same points: identical
    assert itk_affine.read_itk_transform(path).matrix_xy == pytest.approx(transform.matrix_xy, abs=1e-9)


@pytest.mark.parametrize(("fixed_um", "moving_um"), PIXEL_SIZES)
def test_ngff_document_maps_physical_points(tmp_path, fixed_um, moving_um):
    path = tf.write_transform(SHEARED, tmp_path / "r.ngff.json", fixed_pixel_size_um=fixed_um,
                              moving_pixel_size_um=moving_um)
    document = json.loads(path.read_text())
    assert "MOVING" in document["convention"] and "(y, x)" in document["convention"]
    (entry,) = document["coordinateTransformations"]
    assert (entry["type"], entry["input"], entry["output"]) == ("affine", "moving", "fixed")
    assert [a["name"] for a in document["coordinateSystems"][0]["axes"]] == ["y", "x"]
    affine = np.array(entry["affine"])
    assert affine.shape == (2, 3)
    moving_xy = np.array([[0.0, 0.0], [10.0, 3.0], [55.5, 41.0]])
    moving_yx_um = moving_xy[:, ::-1] * moving_um
    fixed_yx_um = moving_yx_um @ affine[:, :2].T + affine[:, 2]
    assert fixed_yx_um[:, ::-1] / fixed_um == pytest.approx(SHEARED.apply_xy(moving_xy), abs=1e-9)
    assert ngff_affine.read_ngff_transform(path).matrix_xy == pytest.approx(SHEARED.matrix_xy, abs=1e-9)


def test_ngff_reader_converts_units_and_direction():
    """A document in nanometres, from 'fixed' to 'moving', reads as the same transform."""
    fixed_um, moving_um = 0.5, 0.25
    forward_um = ngff_affine.ngff_matrix_yx_um(SHEARED, fixed_um, moving_um)
    backward_nm = np.diag([1e3, 1e3, 1.0]) @ np.linalg.inv(forward_um) @ np.diag([1e-3, 1e-3, 1.0])
    axes = [{"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    document = {"coordinateSystems": [{"name": "fixed", "axes": axes}, {"name": "moving", "axes": axes}],
                "coordinateTransformations": [{"type": "affine", "input": {"name": "fixed"},
                                               "output": "moving", "affine": backward_nm.tolist()}]}
    found = ngff_affine.from_ngff_dict(document, fixed_pixel_size_um=fixed_um, moving_pixel_size_um=moving_um)
    assert found.matrix_xy == pytest.approx(SHEARED.matrix_xy, abs=1e-9)


def test_qupath_matrix_uses_corner_origin(tmp_path):
    """QuPath: base (fixed) -> overlay (moving), pixel units, origin at the pixel corner."""
    path = tf.write_transform(SHEARED, tmp_path / "r.qupath.txt")
    text = path.read_text()
    numbers = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(numbers) == 2 and all(len(line.split(",\t")) == 3 for line in numbers)
    assert "e" not in "".join(numbers).lower()  # QuPath's parser reads no exponents
    m = np.array([[float(v) for v in line.split(",")] for line in numbers])
    # The fixed pixel [r, c] covers [c, c + 1] x [r, r + 1] in QuPath: its centre is (c + .5, r + .5).
    fixed_xy = np.array([[0.0, 0.0], [12.0, 7.0], [70.0, 50.0]])
    moving_corner = (fixed_xy + 0.5) @ m[:, :2].T + m[:, 2]
    assert SHEARED.apply_xy(moving_corner - 0.5) == pytest.approx(fixed_xy, abs=1e-9)
    # A pure shift by (3, 2) px is the same shift in either origin: -3, -2 from fixed to moving.
    shift = qupath_affine.qupath_matrix_xy_corner(AffineTransform.rigid(0.0, (3.0, 2.0)))
    assert shift == pytest.approx(np.array([[1, 0, -3], [0, 1, -2], [0, 0, 1]]))
    # A scale by 2 about the origin: moving centre (0, 0) (corner (.5, .5)) lands on fixed centre
    # (0, 0) (corner (.5, .5)), so in corner coordinates the map has a translation.
    half = qupath_affine.qupath_matrix_xy_corner(AffineTransform.similarity(0.0, 2.0))
    assert half @ [0.5, 0.5, 1.0] == pytest.approx([0.5, 0.5, 1.0])
    assert half[:2, 2] == pytest.approx([0.25, 0.25])
    assert qupath_affine.read_qupath_transform(path).matrix_xy == pytest.approx(SHEARED.matrix_xy, abs=1e-9)


@pytest.mark.parametrize("name", ["r.tfm", "r.txt", "r.ngff.json", "r.qupath.txt", "r.csv", "r.json"])
@pytest.mark.parametrize("transform", [SHEARED, AffineTransform.about_center(-30.0, (20, 20), (3, 1))])
def test_every_format_round_trips(tmp_path, name, transform):
    path = tf.write_transform(transform, tmp_path / name, fixed_pixel_size_um=0.3,
                              moving_pixel_size_um=0.7, center_xy=(20.0, 20.0))
    found = tf.read_transform(path)
    assert found.matrix_xy == pytest.approx(transform.matrix_xy, abs=1e-9)
    assert found.model == transform.model
    if name.endswith(".csv"):
        readme = tf.csv_readme_path(path).read_text()
        assert "MOVING" in readme and "pixel [0, 0] is (0, 0)" in readme
    elif name.endswith(".json") and "ngff" not in name:
        assert "MOVING" in json.loads(path.read_text())["convention"]


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = tf.write_transform(SHEARED, tmp_path / "r.txt", format="qupath")
    assert tf.read_transform(path, format="qupath").matrix_xy == pytest.approx(SHEARED.matrix_xy)
    assert [p.name for p in tf.transform_output_paths(tmp_path / "a.csv")] == ["a.csv", "a.csv.README.txt"]


def test_itk_reader_takes_other_2d_types():
    """A rigid transform as SimpleITK writes it (Euler2D, with a centre) reads correctly."""
    euler = sitk.Euler2DTransform((10.0, 5.0), 0.3, (2.0, -1.0))  # fixed -> moving, pixel units
    text = "\n".join(["#Insight Transform File V1.0", "#Transform 0",
                      "Transform: Euler2DTransform_double",
                      "Parameters: " + " ".join(map(repr, euler.GetParameters())),
                      "FixedParameters: " + " ".join(map(repr, euler.GetFixedParameters())), ""])
    found = itk_affine.from_itk_text(text)
    fixed_xy = np.array([[0.0, 0.0], [13.0, 4.0]])
    moving_xy = np.array([euler.TransformPoint(tuple(p)) for p in fixed_xy])
    assert found.apply_xy(moving_xy) == pytest.approx(fixed_xy, abs=1e-9)
    assert found.model == "rigid"


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: tf.write_transform(SHEARED, p / "r.png"), "cannot tell the transform format"),
    (lambda p: tf.write_transform(SHEARED, p / "r.tfm", format="vtk"), "format must be one of"),
    (lambda p: tf.write_transform(SHEARED, p / "r.tfm", fixed_pixel_size_um=0), "positive"),
    (lambda p: tf.write_transform(SHEARED, p / "r.tfm", moving_pixel_size_um="x"), "micrometres"),
    (lambda p: tf.read_transform(p / "missing.tfm"), "not found"),
    (lambda p: itk_affine.from_itk_text("Transform: BSplineTransform_double_2_2\nParameters: 1\n"),
     "unsupported ITK transform"),
    (lambda p: itk_affine.from_itk_text("#x\nTransform: AffineTransform_double_2_2\nParameters: 1 0 0\n"),
     "6 parameters"),
    (lambda p: qupath_affine.from_qupath_text("1, 0, 0\n0, 1\n"), "6 numbers"),
    (lambda p: ngff_affine.from_ngff_dict({"coordinateTransformations": [{"type": "scale"}]}),
     "one 'affine'"),
    (lambda p: ngff_affine.from_ngff_dict({"coordinateTransformations": [
        {"type": "affine", "affine": [[1, 0], [0, 1]]}]}), "2x3"),
])
def test_bad_input_is_one_clear_error(tmp_path, call, message):
    with pytest.raises(InputError, match=message):
        call(tmp_path)


def test_api_export_transform(tmp_path):
    import napari_comir

    path = napari_comir.export_transform(SHEARED, tmp_path / "r.tfm", fixed_pixel_size_um=0.5,
                                         moving_pixel_size_um=0.25)
    itk = sitk.ReadTransform(str(path))
    moving_xy = np.array(itk.TransformPoint((5.0, 2.5))) / 0.25  # fixed pixel (10, 5)
    assert SHEARED.apply_xy(moving_xy)[0] == pytest.approx([10.0, 5.0])
    written = napari_comir.export_transform(SHEARED, tmp_path / "r.dat", format="ngff")
    assert ngff_affine.read_ngff_transform(written).matrix_xy == pytest.approx(SHEARED.matrix_xy)
