"""GeoJSON annotations (e.g. exported from QuPath): read, carry between the images, write.

GeoJSON (RFC 7946) holds geometries with (x, y) coordinates. Annotation tools for microscopy
write them in full-resolution pixels of the image they were drawn on, with (0, 0) at the
top-left **corner** of the top-left pixel (QuPath does); napari-comir's transforms act on
0-based pixel **centres**, so ``x_centre = x_corner - 0.5`` (same for y). The origin is a
parameter (``origin="corner"`` by default here, ``"centre"`` possible), and coordinates in µm
are read with the image's pixel size.

Accepted input: a FeatureCollection, a single Feature, a bare geometry, or a list of features
(as QuPath writes them). Every coordinate of every geometry type (Point, MultiPoint,
LineString, MultiLineString, Polygon with its holes, MultiPolygon, GeometryCollection) is
transformed, including a cell's ``nucleusGeometry`` (QuPath); ``bbox`` members are recomputed;
everything else (properties, ids, classifications, measurements, unknown members) is kept as
it is. A third value of a position (altitude, z) is kept unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..field_transform import coordinate_map
from .files import atomic_path, read_utf8_text

#: Nesting depth of each geometry type's ``coordinates`` above a position ([x, y]).
GEOMETRY_DEPTHS = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2,
                   "Polygon": 2, "MultiPolygon": 3}
#: Feature members other than ``geometry`` that hold a geometry (QuPath: a cell's nucleus).
EXTRA_GEOMETRY_KEYS = ("nucleusGeometry",)
GEOJSON_SUFFIXES = (".geojson", ".json")

_NUMBER_TYPES = (int, float)
#: Maps an (N, 2) float array of (x, y) to another; ``None`` only checks the input.
MapXY = Callable[[np.ndarray], np.ndarray] | None


def _fail(where: str, problem: str) -> InputError:
    return InputError(f"{where}: {problem}" if where else problem)


def _member(where: str, name: str) -> str:
    """Where a member is, for messages: ``features[3].geometry`` (no leading dot at the top)."""
    return f"{where}.{name}" if where else name


def _type(value: dict) -> str | None:
    """An object's "type", as text even when it is not a string (a list is unhashable, and
    would fail every lookup with a traceback)."""
    kind = value.get("type")
    return kind if kind is None or isinstance(kind, str) else f"({_kind(kind)})"


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


# ----------------------------------------------------------------------------- walking


def _check_position(position, where: str) -> None:
    if (not isinstance(position, list) or len(position) < 2
            or not all(type(v) in _NUMBER_TYPES for v in position)):
        raise _fail(where, "a position must be a list of 2 or 3 numbers [x, y], got "
                    f"{json.dumps(position, default=str)[:60]}")


def _map_positions(positions, where: str, map_xy: MapXY) -> list:
    """A list of positions ([x, y] or [x, y, z, ...]) checked and mapped."""
    if not isinstance(positions, list):
        raise _fail(where, f"expected a list of positions, got {_kind(positions)}")
    for i, position in enumerate(positions):
        _check_position(position, f"{where}[{i}]")
    if not positions:
        return []
    try:
        xy = np.array([position[:2] for position in positions], dtype=float)
    except OverflowError as exc:
        raise _fail(where, "a coordinate is too large to be a number") from exc
    if not np.all(np.isfinite(xy)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(xy), axis=1))[0])
        raise _fail(f"{where}[{bad}]", f"coordinates must be finite numbers, got {positions[bad]}")
    if map_xy is None:
        return positions
    mapped = map_xy(xy).tolist()
    return [[*new, *old[2:]] if len(old) > 2 else new for new, old in
            zip(mapped, positions, strict=True)]


def _map_coordinates(coordinates, depth: int, where: str, map_xy: MapXY):
    if depth == 0:  # one position
        _check_position(coordinates, where)
        return _map_positions([coordinates], where, map_xy)[0]
    if depth == 1:
        return _map_positions(coordinates, where, map_xy)
    if not isinstance(coordinates, list):
        raise _fail(where, f"expected a list nested {depth + 1} deep, got {_kind(coordinates)}")
    return [_map_coordinates(part, depth - 1, f"{where}[{i}]", map_xy)
            for i, part in enumerate(coordinates)]


def _map_geometry(geometry, where: str, map_xy: MapXY) -> dict:
    if not isinstance(geometry, dict):
        raise _fail(where, f"expected a geometry object, got {_kind(geometry)}")
    kind = _type(geometry)
    out = dict(geometry)
    if kind == "GeometryCollection":
        parts = geometry.get("geometries")
        if not isinstance(parts, list):
            raise _fail(where, "a GeometryCollection needs a 'geometries' list")
        out["geometries"] = [_map_geometry(part, _member(where, f"geometries[{i}]"), map_xy)
                             for i, part in enumerate(parts)]
    elif kind in GEOMETRY_DEPTHS:
        if "coordinates" not in geometry:
            raise _fail(where, f"a {kind} needs 'coordinates'")
        out["coordinates"] = _map_coordinates(geometry["coordinates"], GEOMETRY_DEPTHS[kind],
                                              _member(where, "coordinates"), map_xy)
    else:
        raise _fail(where, f"{kind!r} is not a GeoJSON geometry type; expected one of "
                    f"{', '.join(GEOMETRY_DEPTHS)}, GeometryCollection")
    return _with_bbox(out, map_xy)


def _map_feature(feature: dict, where: str, map_xy: MapXY) -> dict:
    if "geometry" not in feature:
        raise _fail(where, "a Feature needs a 'geometry' member (null when it has none)")
    out = dict(feature)
    for key in ("geometry", *EXTRA_GEOMETRY_KEYS):
        if feature.get(key) is not None:
            out[key] = _map_geometry(feature[key], _member(where, key), map_xy)
    return _with_bbox(out, map_xy)


def _map_object(value, where: str, map_xy: MapXY):
    """Any GeoJSON object (or a list of them, as QuPath writes), checked and mapped."""
    if isinstance(value, list):
        return [_map_object(item, f"{where}[{i}]", map_xy) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        raise _fail(where, f"expected a GeoJSON object, got {_kind(value)}")
    kind = _type(value)
    if kind == "FeatureCollection":
        features = value.get("features")
        if not isinstance(features, list):
            raise _fail(where, "a FeatureCollection needs a 'features' list")
        out = dict(value)
        out["features"] = [_map_feature_checked(item, _member(where, f"features[{i}]"), map_xy)
                           for i, item in enumerate(features)]
        return _with_bbox(out, map_xy)
    if kind == "Feature":
        return _map_feature(value, where, map_xy)
    if kind in GEOMETRY_DEPTHS or kind == "GeometryCollection":
        return _map_geometry(value, where, map_xy)
    raise _fail(where, f"not GeoJSON: 'type' is {kind!r}; expected FeatureCollection, Feature "
                f"or a geometry ({', '.join(GEOMETRY_DEPTHS)}, GeometryCollection)")


def _map_feature_checked(value, where: str, map_xy: MapXY) -> dict:
    if not isinstance(value, dict) or _type(value) != "Feature":
        got = _type(value) if isinstance(value, dict) else _kind(value)
        raise _fail(where, f"a FeatureCollection holds Features, got {got!r}")
    return _map_feature(value, where, map_xy)


def _positions_xy(value) -> list:
    """Every (x, y) of a checked GeoJSON object."""
    found: list = []

    def collect(coordinates, depth):
        if depth == 0:
            found.append(coordinates[:2])
        else:
            for part in coordinates:
                collect(part, depth - 1)

    def walk(item):
        if isinstance(item, list):
            for part in item:
                walk(part)
        elif isinstance(item, dict):
            kind = _type(item)
            if kind in GEOMETRY_DEPTHS:
                collect(item["coordinates"], GEOMETRY_DEPTHS[kind])
            elif kind == "GeometryCollection":
                walk(item["geometries"])
            elif kind == "FeatureCollection":
                walk(item["features"])
            elif kind == "Feature":
                for key in ("geometry", *EXTRA_GEOMETRY_KEYS):
                    if item.get(key) is not None:
                        walk(item[key])

    walk(value)
    return found


def _with_bbox(out: dict, map_xy: MapXY) -> dict:
    """Recompute a ``bbox`` member from the mapped coordinates (its z range, if any, kept)."""
    if map_xy is None or "bbox" not in out:
        return out
    positions = _positions_xy(out)
    box = out["bbox"]
    if not positions or not isinstance(box, list) or len(box) not in (4, 6):
        out.pop("bbox")  # nothing to bound, or a box that never was one: better none than wrong
        return out
    xy = np.asarray(positions, dtype=float)
    low, high = xy.min(axis=0).tolist(), xy.max(axis=0).tolist()
    out["bbox"] = [*low, *high] if len(box) == 4 else [*low, box[2], *high, box[5]]
    return out


# ----------------------------------------------------------------------------- public API


def check_geojson(data) -> None:
    """Raise :class:`InputError`, saying where, unless ``data`` is GeoJSON this module reads.

    Parameters
    ----------
    data : dict or list
        Parsed JSON: a FeatureCollection, a Feature, a geometry, or a list of features.
    """
    _map_object(data, "", None)


def parse_geojson(text: str, name: str = "GeoJSON"):
    """Parse and check GeoJSON text.

    Parameters
    ----------
    text : str
        The file's text.
    name : str
        What to call it in error messages (e.g. the file name).

    Returns
    -------
    dict or list
        The parsed object, unchanged.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: not JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})") from exc
    except RecursionError as exc:
        raise InputError(f"{name}: JSON nested too deeply to be GeoJSON") from exc
    except ValueError as exc:  # e.g. a number of over 4300 digits
        raise InputError(f"{name}: not JSON that can be read ({str(exc)[:80]})") from exc
    try:
        check_geojson(data)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc
    except RecursionError as exc:
        raise InputError(f"{name}: nested too deeply to be GeoJSON") from exc
    return data


def read_geojson(path: str | os.PathLike):
    """Read and check a GeoJSON file (UTF-8, with or without a byte-order mark).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict or list
        The parsed object: a FeatureCollection, a Feature, a geometry or a list of features.

    Raises
    ------
    InputError
        The file is missing, not UTF-8, not JSON or not GeoJSON; the message says where.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such GeoJSON file: {path}")
    return parse_geojson(read_utf8_text(path, "GeoJSON"), path.name)


def map_geojson_xy(data, map_xy: Callable[[np.ndarray], np.ndarray]):
    """Apply ``map_xy`` to every (x, y) position of a GeoJSON object.

    Parameters
    ----------
    data : dict or list
        A FeatureCollection, a Feature, a geometry or a list of features (checked).
    map_xy : callable
        Takes an (N, 2) float array of (x, y) and returns the (N, 2) mapped positions.

    Returns
    -------
    dict or list
        A new object of the same structure; coordinates (and ``bbox`` members) are new, every
        other member is the very object of ``data``. ``data`` itself is not changed.
    """
    try:
        return _map_object(data, "", map_xy)
    except RecursionError as exc:
        raise InputError("GeoJSON nested too deeply") from exc


def transform_geojson(
    data,
    transform,
    *,
    inverse: bool = False,
    origin: str = "corner",
    moving_pixel_size=None,
    fixed_pixel_size=None,
):
    """Carry GeoJSON annotations from the moving image onto the fixed one, or back.

    Parameters
    ----------
    data : dict or list
        A FeatureCollection, a Feature, a geometry or a list of features.
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed transform (as registration finds it: 0-based pixel centres); a
        deformable one carries every vertex through its field (both ways).
    inverse : bool
        ``False``: the annotations were drawn on the moving image and are carried onto the fixed
        one. ``True``: drawn on the fixed image, carried onto the moving one.
    origin : {"corner", "centre"}
        Where the annotations' (0, 0) lies: the top-left corner of the top-left pixel (QuPath,
        the default) or its centre.
    moving_pixel_size, fixed_pixel_size : float or (float, float), optional
        When given, coordinates in that image's frame are in µm, this many per pixel (one
        number, or (x, y)); otherwise in full-resolution pixels.

    Returns
    -------
    dict or list
        The annotations in the target image's frame (same origin and units), everything but the
        coordinates and ``bbox`` kept; ``data`` is not changed.
    """
    return map_geojson_xy(data, coordinate_map(transform, inverse=inverse, origin=origin,
                                               moving_pixel_size=moving_pixel_size,
                                               fixed_pixel_size=fixed_pixel_size))


def write_geojson(path: str | os.PathLike, data, *, indent: int | None = None) -> None:
    """Write GeoJSON atomically (UTF-8): a reader never sees a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    data : dict or list
        A GeoJSON object (checked before anything is written).
    indent : int, optional
        Indent nested members by this many spaces (default: one compact line).
    """
    check_geojson(data)
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        encoded = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (valid JSON, not UTF-8): kept as its escape
        encoded = (json.dumps(data, indent=indent) + "\n").encode("ascii")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded)


def count_positions(data) -> int:
    """The number of (x, y) positions in a checked GeoJSON object."""
    return len(_positions_xy(data))


__all__ = ["EXTRA_GEOMETRY_KEYS", "GEOJSON_SUFFIXES", "GEOMETRY_DEPTHS", "check_geojson",
           "count_positions", "map_geojson_xy", "parse_geojson", "read_geojson",
           "transform_geojson", "write_geojson"]
