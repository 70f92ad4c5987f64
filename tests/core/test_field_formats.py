"""A deformable transform written for ITK (read back by SimpleITK itself), OME-NGFF RFC-5, JSON
and NPZ, and read back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform
from napari_comir.core.io.transform_formats import read_transform, write_transform
from napari_comir.core.transforms import AffineTransform

SHAPE = (90, 120)
AFFINE = AffineTransform.from_matrix_xy([[1.0413, 0.1237, 4.37], [-0.1161, 0.9877, 6.91]])


@pytest.fixture(scope="module")
def deformable():
    field = smooth_deformation(SHAPE, 5.0, np.random.default_rng(2), smoothness_px=25.0)
    return DisplacementFieldTransform(AFFINE, field.displacement_xy, field.inverse_displacement_xy,
                                      field.spacing_px)


POINTS = np.array([[10.0, 12.0], [60.5, 40.25], [100.0, 80.0], [3.0, 70.0]])


def test_simpleitk_reads_the_itk_file_in_its_direction_and_units(deformable, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    path = write_transform(deformable, tmp_path / "t.tfm", fixed_pixel_size_um=0.5,
                           moving_pixel_size_um=0.8)
    itk = sitk.ReadTransform(str(path))
    # ITK: fixed physical µm -> moving physical µm
    mapped = np.array([itk.TransformPoint(tuple(p * 0.5)) for p in POINTS]) / 0.8
    np.testing.assert_allclose(mapped, deformable.inverse().apply_xy(POINTS), atol=1e-4)
    back = read_transform(path)
    np.testing.assert_allclose(back.apply_xy(POINTS), deformable.apply_xy(POINTS), atol=0.02)
    np.testing.assert_allclose(back.inverse().apply_xy(POINTS), deformable.inverse().apply_xy(POINTS),
                               atol=1e-4)


def test_ngff_rfc5_group_holds_both_directions(deformable, tmp_path):
    path = write_transform(deformable, tmp_path / "t.ngff.zarr", fixed_pixel_size_um=0.5,
                           moving_pixel_size_um=0.8)
    attributes = json.loads((path / ".zattrs").read_text())
    sequences = {(t["input"], t["output"]): [step["type"] for step in t["transformations"]]
                 for t in attributes["coordinateTransformations"]}
    assert sequences == {("fixed", "moving"): ["displacements", "affine"],
                         ("moving", "fixed"): ["affine", "displacements"]}
    back = read_transform(path)
    for direction in (lambda t: t, lambda t: t.inverse()):
        np.testing.assert_allclose(direction(back).apply_xy(POINTS),
                                   direction(deformable).apply_xy(POINTS), atol=1e-4)
    assert path.stat().st_mode & 0o777 == 0o777 & ~_umask()  # built in a staging folder (0700)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.mark.parametrize("name", ["t.json", "t.npz"])
def test_json_and_npz_round_trip(deformable, tmp_path, name):
    back = read_transform(write_transform(deformable, tmp_path / name))
    assert isinstance(back, DisplacementFieldTransform)
    np.testing.assert_allclose(back.apply_xy(POINTS), deformable.apply_xy(POINTS), atol=1e-3)


def test_formats_that_hold_a_matrix_only_refuse_a_field(deformable, tmp_path):
    for name in ("t.csv", "t.qupath.txt", "t.ngff.json"):
        with pytest.raises(InputError, match="affine|zarr"):
            write_transform(deformable, tmp_path / name)
        assert not (tmp_path / name).exists()
    with pytest.raises(InputError, match="deformable"):
        write_transform(AFFINE, tmp_path / "a.npz")


def test_simpleitk_resamples_like_napari_comir(deformable, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from napari_comir.core.field_transform import resample

    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    moving = (np.sin(rows / 7.0) + np.cos(cols / 5.0)).astype(np.float64)
    path = write_transform(deformable, tmp_path / "t.tfm", fixed_pixel_size_um=0.5,
                           moving_pixel_size_um=0.5)
    moving_image = sitk.GetImageFromArray(moving)
    moving_image.SetSpacing((0.5, 0.5))
    reference = sitk.Image(SHAPE[1], SHAPE[0], sitk.sitkFloat64)
    reference.SetSpacing((0.5, 0.5))
    theirs = sitk.GetArrayFromImage(sitk.Resample(moving_image, reference, sitk.ReadTransform(str(path)),
                                                  sitk.sitkLinear, 0.0))
    ours = resample(moving, deformable, SHAPE, preserve_dtype=False)
    inside = resample(np.ones_like(moving), deformable, SHAPE, preserve_dtype=False) > 0.999
    assert inside.mean() > 0.5
    np.testing.assert_allclose(theirs[inside], ours[inside], atol=1e-3)


def test_an_affine_result_written_as_a_zero_field(tmp_path):
    as_field = DisplacementFieldTransform.from_affine(AFFINE, SHAPE)
    back = read_transform(write_transform(as_field, tmp_path / "a.ngff.zarr"))
    np.testing.assert_allclose(back.apply_xy(POINTS), AFFINE.apply_xy(POINTS), atol=1e-6)
    np.testing.assert_allclose(back.inverse().apply_xy(POINTS), AFFINE.inverse().apply_xy(POINTS),
                               atol=1e-6)


def _transformix_points(parameter_file, fixed_xy_um, tmp_path) -> np.ndarray:
    """Fixed physical points -> moving physical points, by itk-elastix's transformix."""
    import itk

    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFile(str(parameter_file))
    points = tmp_path / "points.txt"
    points.write_text(f"point\n{len(fixed_xy_um)}\n"
                      + "".join(f"{float(x)!r} {float(y)!r}\n" for x, y in fixed_xy_um))
    (tmp_path / "transformix").mkdir()
    itk.transformix_pointset(itk.image_from_array(np.zeros((8, 8), np.float32)), parameters,
                             fixed_point_set_file_name=str(points),
                             output_directory=str(tmp_path / "transformix"))
    lines = (tmp_path / "transformix" / "outputpoints.txt").read_text().splitlines()
    return np.array([[float(v) for v in line.split("OutputPoint = [")[1].split("]")[0].split()]
                     for line in lines])


@pytest.mark.parametrize("kind", ["affine", "deformable"])
def test_elastix_files_map_points_and_images_as_napari_comir(deformable, tmp_path, kind):
    """transformix (itk-elastix) reads the parameter files and maps fixed points to moving ones,
    and resamples a moving image onto the fixed grid, as napari-comir does (µm, two pixel sizes)."""
    from scipy import ndimage

    from napari_comir.core.field_transform import resample
    from napari_comir.core.io.elastix_files import write_elastix_transform

    itk = pytest.importorskip("itk")
    transform = deformable if kind == "deformable" else AFFINE
    fixed_um, moving_um = 0.5, 0.8
    (tmp_path / "export").mkdir()
    written = write_elastix_transform(transform, tmp_path / "export" / "r.txt", fixed_shape=SHAPE,
                                      fixed_pixel_size_um=fixed_um, moving_pixel_size_um=moving_um)
    assert [path.name for path in written] == (
        ["r.field.mha", "r.field.txt", "r.txt"] if kind == "deformable" else ["r.txt"])
    fixed_xy = np.random.default_rng(3).uniform(0, 89, size=(40, 2))
    moving_xy = _transformix_points(written[-1], fixed_xy * fixed_um, tmp_path) / moving_um
    np.testing.assert_allclose(moving_xy, transform.inverse().apply_xy(fixed_xy), atol=1e-4)
    image = ndimage.gaussian_filter(np.random.default_rng(4).random((100, 110)), 2).astype(np.float32)
    moving = itk.image_from_array(image)
    moving.SetSpacing((moving_um, moving_um))
    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFile(str(written[-1]))
    theirs = itk.array_from_image(itk.transformix_filter(moving, parameters))
    ours = resample(image, transform, SHAPE, preserve_dtype=False)
    assert theirs.shape == SHAPE
    inside = (ours != 0) & (theirs != 0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(theirs[inside], ours[inside], atol=1e-4)


def test_an_elastix_parameter_file_read_as_a_transform_says_what_it_is(tmp_path):
    """An exported ``.elastix.txt`` given to ``read_transform`` (``napari-comir apply``) read as
    an ITK file: "an ITK transform file for napari-comir holds one 2-D transform, found 0"."""
    from napari_comir.core.io.elastix_files import write_elastix_transform

    (path,) = write_elastix_transform(AFFINE, tmp_path / "r.elastix.txt", fixed_shape=SHAPE)
    with pytest.raises(InputError, match=r"r\.elastix\.txt is an elastix parameter file, for "
                                         r"transformix .* reads back the transform it exported as"):
        read_transform(path)
