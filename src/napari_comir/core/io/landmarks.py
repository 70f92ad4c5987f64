"""Landmark files: the points a person placed on one image, read as an (N, 2) array of (x, y).

Row i of one image's file pairs with row i of the other image's file. What is read:

- CSV, TSV or whitespace-separated text: two columns ``x, y``, three ``id, x, y`` (ANHIR, the
  shared ``he_ihc`` landmarks), with or without a header row. A header naming columns ``x`` and
  ``y`` (any case; ImageJ's Results table writes ``X``, ``Y`` among its measurements; QuPath's
  point export ``x``, ``y``) picks those columns whatever else the table holds.
- napari's Points layer saved as CSV (``index, axis-0, axis-1``): (row, col), swapped to (x, y).
- GeoJSON (QuPath's "Export objects as GeoJSON"): every Point and MultiPoint position, in
  file order.

Coordinates are pixels of the image, as written: x is the column, y the row.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .files import read_utf8_text

#: Columns, as a header names them, holding x and y (lower case); napari's are (row, col).
_XY_HEADERS = (("x", "y"), ("x_px", "y_px"), ("centroid x px", "centroid y px"))
_NAPARI_HEADERS = ("axis-0", "axis-1")


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """The landmarks in a points file, as an (N, 2) float array of (x, y) pixel coordinates.

    Parameters
    ----------
    path : str or os.PathLike
        CSV/TSV/text (``x,y``, ``id,x,y``, a header optional, napari's ``axis-0,axis-1``) or
        GeoJSON (``.geojson`` or ``.json``: Point and MultiPoint positions).

    Raises
    ------
    InputError
        Missing or unreadable file, no points, or columns that cannot be told apart; the
        message says which line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such landmarks file: {path}")
    text = read_utf8_text(path, "landmarks (CSV of x,y or GeoJSON points)")
    if path.suffix.lower() in (".geojson", ".json"):
        points = _geojson_points(text, path.name)
    else:
        points = _table_points(text, path.name)
    if not len(points):
        raise InputError(f"{path.name}: no landmarks in it")
    if not np.all(np.isfinite(points)):
        raise InputError(f"{path.name}: a landmark has a NaN or infinite coordinate")
    return points


def _geojson_points(text: str, name: str) -> np.ndarray:
    from .geojson import parse_geojson

    data = parse_geojson(text, name)
    features = data.get("features", [data]) if isinstance(data, dict) else data
    points = []
    for feature in features:
        geometry = feature.get("geometry", feature) if isinstance(feature, dict) else None
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        if kind == "Point":
            points.append(geometry["coordinates"][:2])
        elif kind == "MultiPoint":
            points.extend(position[:2] for position in geometry["coordinates"])
    if not points:
        raise InputError(f"{name}: no Point or MultiPoint geometries (landmarks are points)")
    return np.asarray(points, dtype=float)


def _table_rows(text: str, name: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{name}: no landmarks in it")
    first = lines[0]
    delimiter = next((d for d in ("\t", ",", ";") if d in first), None)
    if delimiter is None:  # whitespace-separated (ImageJ's "Save XY Coordinates")
        return [line.split() for line in lines]
    return [[cell.strip() for cell in row]
            for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table_points(text: str, name: str) -> np.ndarray:
    rows = _table_rows(text, name)
    header = [cell.lower() for cell in rows[0]]
    columns = None
    has_header = not all(_is_number(cell) for cell in rows[0] if cell)
    if has_header:
        rows = rows[1:]
        for x_name, y_name in _XY_HEADERS:
            if x_name in header and y_name in header:
                columns = (header.index(x_name), header.index(y_name))
        if columns is None and all(h in header for h in _NAPARI_HEADERS):
            columns = (header.index("axis-1"), header.index("axis-0"))  # napari: (row, col)
    if columns is None:  # no header, or one that names no x and y: x, y are the last two of 2-3
        widths = {len(row) for row in rows}
        if not rows:
            return np.empty((0, 2))
        if not widths <= {2, 3}:
            raise InputError(f"{name}: expected columns x,y or id,x,y (or a header naming x and "
                             f"y), got rows of {sorted(widths)} values")
        width = widths.pop() if len(widths) == 1 else None
        if width is None:
            raise InputError(f"{name}: rows of both 2 and 3 values; use one layout (x,y or id,x,y)")
        columns = (width - 2, width - 1)
    points = []
    for number, row in enumerate(rows, start=2 if has_header else 1):
        try:
            points.append((float(row[columns[0]]), float(row[columns[1]])))
        except (ValueError, IndexError) as exc:
            raise InputError(f"{name} line {number}: not a number pair for x, y "
                             f"({','.join(row)[:60]!r})") from exc
    return np.asarray(points, dtype=float).reshape(-1, 2)
