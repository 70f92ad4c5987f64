"""GeoJSON annotations carried between the moving and the fixed image, both ways."""

import copy
import json

import numpy as np
import pytest
from skimage.measure import points_in_poly

from napari_comir.core.coordinate_frames import coordinate_transform
from napari_comir.core.errors import InputError
from napari_comir.core.io.geojson import (
    count_positions,
    parse_geojson,
    read_geojson,
    transform_geojson,
    write_geojson,
)
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform

# Coefficients that are no round numbers: no pixel centre lands exactly half-way between two
# pixels, where nearest-neighbour resampling breaks a tie either way.
T = AffineTransform.from_matrix_xy([[1.0937, 0.2113, 6.371], [-0.1487, 0.9071, 8.173]])
SIMILAR = AffineTransform.about_center(23.0, (40.0, 30.0), (7.3, -4.1), scale=1.2)


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def every_geometry():
    """One feature of each geometry type, a polygon with a hole, a 3-D position and a bbox."""
    geometries = [
        {"type": "Point", "coordinates": [10, 20]},
        {"type": "MultiPoint", "coordinates": [[1.5, 2.5], [3, 4, 7.0]]},
        {"type": "LineString", "coordinates": [[0, 0], [10, 5], [20, 0]]},
        {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[5, 5], [6, 7], [8, 9]]]},
        {"type": "Polygon", "coordinates": [square(0, 0, 50, 40), square(10, 10, 20, 20)[::-1]]},
        {"type": "MultiPolygon", "coordinates": [[square(0, 0, 5, 5)],
                                                 [square(30, 30, 60, 60), square(40, 40, 45, 45)]]},
        {"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [3, 3]},
            {"type": "Polygon", "coordinates": [square(1, 1, 2, 2)]}]},
    ]
    features = [{"type": "Feature", "id": f"id-{i}", "geometry": g,
                 "properties": {"name": g["type"], "classification": {"name": "Tumor",
                                                                      "color": [200, 0, 0]},
                                "measurements": {"area": 12.5}}}
                for i, g in enumerate(geometries)]
    features.append({"type": "Feature", "geometry": None, "properties": {}})  # unlocated
    return {"type": "FeatureCollection", "features": features, "bbox": [0, 0, 60, 60],
            "name": "my annotations"}


def all_xy(data):
    """Every (x, y) of a GeoJSON object, flat, in document order."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if "coordinates" in value:
                flatten(value["coordinates"])
            for key in ("geometries", "features"):
                for item in value.get(key, []):
                    walk(item)
            for key in ("geometry", "nucleusGeometry"):
                if value.get(key):
                    walk(value[key])
        elif isinstance(value, list):
            for item in value:
                walk(item)

    def flatten(coordinates):
        if coordinates and isinstance(coordinates[0], (int, float)):
            found.append(coordinates[:2])
        else:
            for part in coordinates:
                flatten(part)

    walk(data)
    return np.array(found, dtype=float)


@pytest.mark.parametrize("origin", ["corner", "centre"])
def test_every_geometry_round_trips_and_keeps_the_rest(origin):
    data = every_geometry()
    before = copy.deepcopy(data)
    forward = transform_geojson(data, T, origin=origin)
    assert data == before  # the input is not changed
    back = transform_geojson(forward, T, inverse=True, origin=origin)
    assert np.allclose(all_xy(back), all_xy(data), atol=1e-9, rtol=0)
    assert count_positions(forward) == count_positions(data) == len(all_xy(data))
    # Coordinates moved exactly as the transform says (with the origin's half-pixel shift).
    shift = 0.5 if origin == "corner" else 0.0
    assert np.allclose(all_xy(forward), T.apply_xy(all_xy(data) - shift) + shift, atol=1e-9)
    # Everything else is kept: ids, properties, nulls, unknown members; the z of a position.
    for old, new in zip(data["features"], forward["features"], strict=True):
        assert new["properties"] == old["properties"] and new.get("id") == old.get("id")
    assert forward["features"][-1]["geometry"] is None
    assert forward["name"] == "my annotations"
    assert forward["features"][1]["geometry"]["coordinates"][1][2] == 7.0
    # The bbox bounds the new coordinates.
    xy = all_xy(forward)
    assert np.allclose(forward["bbox"], [*xy.min(axis=0), *xy.max(axis=0)])


def test_polygon_with_a_hole_keeps_its_rings():
    polygon = {"type": "Polygon", "coordinates": [square(0, 0, 50, 40), square(10, 10, 20, 20)[::-1]]}
    out = transform_geojson(polygon, SIMILAR, origin="centre")
    outer, hole = (np.array(ring) for ring in out["coordinates"])
    assert outer.shape == (5, 2) and hole.shape == (5, 2)
    assert np.allclose(outer[0], outer[-1]) and np.allclose(hole[0], hole[-1])  # still closed
    assert np.allclose(hole, SIMILAR.apply_xy(np.array(square(10, 10, 20, 20)[::-1])))
    # The hole is still inside the outer ring, and still a hole (opposite winding).
    assert points_in_poly(hole, outer).all()

    def signed_area(ring):
        x, y = ring[:, 0], ring[:, 1]
        return 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])

    assert np.sign(signed_area(outer)) == -np.sign(signed_area(hole))


def qupath_export():
    """What QuPath's "Export objects as GeoJSON" writes: a bare list of features, a cell with a
    nucleus, NaN measurements, object ids, classifications."""
    return """[
  {
    "type": "Feature",
    "id": "4d1c3b0e-6a59-4a3c-9d7e-0c1b9b2d8a11",
    "geometry": {"type": "Polygon", "coordinates": [[[100, 200], [180, 200], [180, 260],
                                                     [100, 260], [100, 200]]]},
    "properties": {"objectType": "annotation", "classification": {"name": "Stroma",
                   "color": [150, 200, 150]}, "isLocked": false}
  },
  {
    "type": "Feature",
    "id": "9a7e1f52-0000-4b1a-8c6f-5e2d1c0b9a88",
    "geometry": {"type": "Polygon", "coordinates": [[[10.5, 10.5], [20.5, 10.5], [20.5, 18.5],
                                                     [10.5, 10.5]]]},
    "nucleusGeometry": {"type": "Polygon", "coordinates": [[[13, 12], [17, 12], [15, 16],
                                                            [13, 12]]]},
    "properties": {"objectType": "cell", "measurements": {"Nucleus: Area": 12.0,
                   "Cell: Eosin OD mean": NaN}}
  }
]"""


def test_a_qupath_feature_list_and_its_nuclei(tmp_path):
    path = tmp_path / "export.geojson"
    path.write_text(qupath_export(), encoding="utf-8")
    data = read_geojson(path)
    out_path = tmp_path / "on_fixed.geojson"
    write_geojson(out_path, transform_geojson(data, T))
    carried = json.loads(out_path.read_text(encoding="utf-8"))
    assert isinstance(carried, list) and len(carried) == 2
    assert [f["id"] for f in carried] == [f["id"] for f in data]
    assert carried[0]["properties"] == data[0]["properties"]
    assert np.isnan(carried[1]["properties"]["measurements"]["Cell: Eosin OD mean"])  # kept
    nucleus = np.array(carried[1]["nucleusGeometry"]["coordinates"][0])
    corner = np.array(data[1]["nucleusGeometry"]["coordinates"][0], dtype=float)
    assert np.allclose(nucleus, T.apply_xy(corner - 0.5) + 0.5, atol=1e-9)  # nuclei move too
    back = transform_geojson(read_geojson(out_path), T, inverse=True)
    assert np.allclose(all_xy(back), all_xy(data), atol=1e-9, rtol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


@pytest.mark.parametrize("transform", [SIMILAR, T, AffineTransform.about_center(90.0, (30, 30),
                                                                                (4.0, 0.0))])
@pytest.mark.parametrize("inverse", [False, True])
def test_corner_origin_encloses_the_same_pixels_after_resampling(transform, inverse):
    """A square annotation drawn around pixels (corner origin, as QuPath draws it) still encloses
    exactly the resampled pixels; taking the corners for centres shifts it by half a pixel."""
    shape = (64, 80)
    x0, y0, x1, y1 = 21, 17, 35, 29  # pixel corners: encloses columns 21..34, rows 17..28
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = 1
    annotation = {"type": "Polygon", "coordinates": [square(x0, y0, x1, y1)]}
    directed = transform.inverse() if inverse else transform
    resampled = resample(mask, directed, shape, order=0)
    assert resampled.sum() > 50

    def enclosed(polygon):
        rows, cols = np.mgrid[:shape[0], :shape[1]]
        centres_corner_origin = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
        ring = np.array(polygon["coordinates"][0])
        return points_in_poly(centres_corner_origin, ring).reshape(shape)

    carried = transform_geojson(annotation, transform, inverse=inverse)  # origin="corner"
    assert np.array_equal(enclosed(carried), resampled.astype(bool))
    wrong = transform_geojson(annotation, transform, inverse=inverse, origin="centre")
    if not np.allclose(directed.matrix_xy[:2, :2], np.eye(2)):  # a pure shift hides the error
        assert not np.array_equal(enclosed(wrong), resampled.astype(bool))


def test_micrometre_coordinates_use_each_images_pixel_size():
    """Coordinates in µm: moving at 0.5 µm/px, fixed at 2 µm/px, transform in pixels."""
    point = {"type": "Point", "coordinates": [12.0, 7.0]}  # µm in the moving frame, corner origin
    out = transform_geojson(point, SIMILAR, moving_pixel_size=0.5, fixed_pixel_size=2.0)
    moving_centre_px = np.array([12.0, 7.0]) / 0.5 - 0.5
    expected_um = (SIMILAR.apply_xy(moving_centre_px)[0] + 0.5) * 2.0
    assert np.allclose(out["coordinates"], expected_um)
    back = transform_geojson(out, SIMILAR, inverse=True, moving_pixel_size=0.5,
                             fixed_pixel_size=2.0)
    assert np.allclose(back["coordinates"], [12.0, 7.0], atol=1e-9)
    anisotropic = coordinate_transform(AffineTransform.rigid(), moving_pixel_size=(0.5, 0.25),
                                       fixed_pixel_size=1.0, origin="centre")
    assert np.allclose(anisotropic.apply_xy([4.0, 4.0]), [[8.0, 16.0]])  # µm -> px -> µm


@pytest.mark.parametrize("text, says", [
    ("not json at all", "not JSON"),
    ("", "not JSON"),
    ('{"type": "Banana"}', "not GeoJSON"),
    ('"a string"', "expected a GeoJSON object"),
    ('{"type": "FeatureCollection"}', "'features' list"),
    ('{"type": "FeatureCollection", "features": [{"type": "Point", "coordinates": [1, 2]}]}',
     "holds Features"),
    ('{"type": "Feature", "properties": {}}', "'geometry' member"),
    ('{"type": "Point", "coordinates": ["1", 2]}', "coordinates: a position must be"),
    ('{"type": "Point", "coordinates": [true, 2]}', "a position must be"),
    ('{"type": "LineString", "coordinates": [[1, 2], [3]]}', "coordinates[1]: a position"),
    ('{"type": "Polygon", "coordinates": [[1, 2], [3, 4]]}', "coordinates[0][0]"),
    ('{"type": "MultiPoint", "coordinates": [[1, NaN]]}', "finite"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": 5}}]',
     "[0].geometry.coordinates: expected a list"),
    ('{"type": "GeometryCollection"}', "'geometries' list"),
    ('{"type": "Point"}', "needs 'coordinates'"),
    ("[" * 100000 + "]" * 100000, "deep"),
])
def test_bad_input_is_refused_in_one_line(text, says):
    with pytest.raises(InputError) as info:
        parse_geojson(text, "in.geojson")
    message = str(info.value)
    assert says in message and message.startswith("in.geojson: ") and "\n" not in message


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such GeoJSON file"):
        read_geojson(tmp_path / "missing.geojson")
    binary = tmp_path / "slide.geojson"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(InputError, match="not a text file in UTF-8"):
        read_geojson(binary)
    with_bom = tmp_path / "bom.geojson"
    with_bom.write_bytes('\ufeff{"type": "Point", "coordinates": [1, 2]}'.encode())
    assert read_geojson(with_bom)["coordinates"] == [1, 2]
    with pytest.raises(InputError, match="origin must be"):
        transform_geojson(read_geojson(with_bom), T, origin="middle")
    with pytest.raises(InputError, match="moving_pixel_size"):
        transform_geojson(read_geojson(with_bom), T, moving_pixel_size=-1)
