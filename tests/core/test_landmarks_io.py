"""Landmark files as microscopists' tools write them: (x, y) in file order, whatever the layout."""

import json

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.io.landmarks import read_landmarks

EXPECTED = np.array([[212.4, 158.4], [259.2, 155.2], [10.0, 20.5]])


@pytest.mark.parametrize("text", [
    "212.4,158.4\n259.2,155.2\n10,20.5\n",                                   # x,y
    "id,x,y\n1,212.4,158.4\n2,259.2,155.2\n3,10,20.5\n",                     # ANHIR / he_ihc
    ",X,Y\n1,212.4,158.4\n2,259.2,155.2\n3,10,20.5\n",                       # ImageJ multi-point
    " ,Area,Mean,X,Y\n1,0,255,212.4,158.4\n2,0,255,259.2,155.2\n3,0,9,10,20.5\n",  # ImageJ Results
    "x\ty\tname\n212.4\t158.4\ta\n259.2\t155.2\tb\n10\t20.5\tc\n",           # QuPath points (TSV)
    "212.4 158.4\n259.2 155.2\n10 20.5\n",                                   # ImageJ XY coordinates
    "index,axis-0,axis-1\n0,158.4,212.4\n1,155.2,259.2\n2,20.5,10\n",        # napari Points: (row, col)
    "\ufeff# clicked by hand\n1;212.4;158.4\n2;259.2;155.2\n3;10;20.5\n",    # BOM, comment, semicolons
])
def test_table_layouts_give_x_y_in_file_order(tmp_path, text):
    path = tmp_path / "points.csv"
    path.write_text(text, encoding="utf-8")
    np.testing.assert_allclose(read_landmarks(path), EXPECTED)


def test_geojson_points_in_file_order(tmp_path):
    features = [{"type": "Feature", "properties": {},
                 "geometry": {"type": "Point", "coordinates": [212.4, 158.4]}},
                {"type": "Feature", "properties": {},
                 "geometry": {"type": "MultiPoint", "coordinates": [[259.2, 155.2], [10, 20.5]]}},
                {"type": "Feature", "properties": {},
                 "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}]
    path = tmp_path / "points.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    np.testing.assert_allclose(read_landmarks(path), EXPECTED)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no landmarks"),
    ("id,x,y\n", "no landmarks"),
    ("1,2\n1,2,3\n", "rows of both"),
    ("1,2,3,4\n", "x,y or id,x,y"),
    ("x,y\n1,two\n", "line 2"),
    ("x,y\n1,nan\n", "NaN"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "points.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_landmarks(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="no such landmarks file"):
        read_landmarks(tmp_path / "nope.csv")
