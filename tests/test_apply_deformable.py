"""A deformable result carried like an affine one: `napari-comir apply` with GeoJSON, points,
images and labels both ways, whole images tile by tile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_comir import api
from napari_comir.cli import main
from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform, resample
from napari_comir.core.io import write_tiff
from napari_comir.core.registration import RegistrationResult
from napari_comir.core.tiled_resample import resample_tiles
from napari_comir.core.transforms import AffineTransform

MOVING_SHAPE, FIXED_SHAPE = (80, 90), (100, 110)
AFFINE = AffineTransform.from_matrix_xy([[1.0413, 0.1237, 4.37], [-0.1161, 0.9877, 6.91]])
POINTS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "geometry": {"type": "MultiPoint",
                                     "coordinates": [[10.0, 12.0], [40.5, 30.25], [70.0, 60.0]]},
     "properties": {"name": "landmarks"}}]}


@pytest.fixture(scope="module")
def deformable():
    field = smooth_deformation(FIXED_SHAPE, 4.0, np.random.default_rng(7), smoothness_px=25.0)
    return DisplacementFieldTransform(AFFINE, field.displacement_xy, field.inverse_displacement_xy,
                                      field.spacing_px)


@pytest.fixture
def result_json(tmp_path, deformable):
    """The JSON `register --transform deformable --out` writes for a kept field."""
    result = RegistrationResult(deformable, 0.8, 0.2, "search", {}, True, detail_score=2.0,
                                moving_shape=MOVING_SHAPE)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**result.to_dict(), "model": "bf-shg"}) + "\n")
    return path


def xy_of(path):
    return np.array(json.loads(path.read_text())["features"][0]["geometry"]["coordinates"])


def test_cli_geojson_both_ways_through_the_field(result_json, deformable, tmp_path):
    source, mapped, back = tmp_path / "p.geojson", tmp_path / "m.geojson", tmp_path / "b.geojson"
    source.write_text(json.dumps(POINTS))
    assert main(["apply", "--transform", str(result_json), "--geojson", str(source), "--out",
                 str(mapped), "--origin", "centre"]) == 0
    moving_xy = xy_of(source)
    # the result JSON keeps the field to 1e-4 px
    np.testing.assert_allclose(xy_of(mapped), deformable.apply_xy(moving_xy), atol=1e-3)
    assert np.abs(xy_of(mapped) - AFFINE.apply_xy(moving_xy)).max() > 0.5  # the field counts
    assert main(["apply", "--transform", str(result_json), "--geojson", str(mapped), "--out",
                 str(back), "--origin", "centre", "--inverse"]) == 0
    np.testing.assert_allclose(xy_of(back), moving_xy, atol=0.02)
    # corner origin and µm, as with an affine transform
    corner = tmp_path / "c.geojson"
    assert main(["apply", "--transform", str(result_json), "--geojson", str(source), "--out",
                 str(corner), "--moving-pixel-size", "0.5", "--fixed-pixel-size", "0.25"]) == 0
    expected = (deformable.apply_xy(moving_xy / 0.5 - 0.5) + 0.5) * 0.25
    np.testing.assert_allclose(xy_of(corner), expected, atol=1e-3)


def test_points_images_and_labels_both_ways(result_json, deformable, tmp_path):
    moving_rc = np.array([[12.0, 10.0], [30.25, 40.5]])
    np.testing.assert_allclose(api.apply_transform_to_points(result_json, moving_rc),
                               deformable.apply_rc(moving_rc), atol=1e-3)
    labels = np.zeros(MOVING_SHAPE, np.uint16)
    labels[10:40, 20:50], labels[50:70, 60:85] = 3, 1200
    write_tiff(tmp_path / "labels.tif", labels)
    write_tiff(tmp_path / "fixed.tif", np.zeros(FIXED_SHAPE, np.uint8))
    write_tiff(tmp_path / "moving.tif", np.zeros(MOVING_SHAPE, np.uint8))
    run = lambda *args: main(["apply", "--transform", str(result_json), *map(str, args)])  # noqa: E731
    assert run("--image", tmp_path / "labels.tif", "--labels", "--like", tmp_path / "fixed.tif",
               "--out", tmp_path / "on_fixed.tif") == 0
    on_fixed = tifffile.imread(tmp_path / "on_fixed.tif")
    np.testing.assert_array_equal(on_fixed, resample(labels, deformable, FIXED_SHAPE, order=0))
    assert set(np.unique(on_fixed)) == {0, 3, 1200}
    assert run("--image", tmp_path / "on_fixed.tif", "--labels", "--inverse", "--like",
               tmp_path / "moving.tif", "--out", tmp_path / "back.tif") == 0
    assert np.mean(tifffile.imread(tmp_path / "back.tif") != labels) < 0.02


def test_tiles_equal_the_whole_image(deformable):
    image = np.random.default_rng(3).random(MOVING_SHAPE + (2,)).astype(np.float32)
    whole = resample(image, deformable, FIXED_SHAPE)
    tiled = np.zeros_like(whole)
    for rows, cols, pixels in resample_tiles(image, deformable, FIXED_SHAPE, tile=32):
        tiled[rows, cols] = pixels
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
