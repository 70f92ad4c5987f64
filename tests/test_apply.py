"""`napari-comir apply` and the API behind it: annotations, points, images and labels carried
between the moving and the fixed image, both ways."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_comir import api
from napari_comir.cli import main
from napari_comir.core.errors import InputError
from napari_comir.core.io import write_tiff
from napari_comir.core.registration import RegistrationResult
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform

# No round coefficients: no pixel centre lands exactly half-way between two pixels.
T = AffineTransform.from_matrix_xy([[1.0413, 0.1237, 4.37], [-0.1161, 0.9877, 6.91]])
QUPATH = [
    {"type": "Feature", "id": "a1", "geometry": {"type": "Polygon", "coordinates": [
        [[10, 10], [50, 10], [50, 40], [10, 40], [10, 10]],
        [[20, 20], [20, 30], [30, 30], [20, 20]]]},
     "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
    {"type": "Feature", "id": "c1", "geometry": {"type": "Point", "coordinates": [33.5, 12.25]},
     "nucleusGeometry": {"type": "Polygon", "coordinates": [[[30, 10], [36, 10], [33, 15],
                                                             [30, 10]]]},
     "properties": {"objectType": "cell", "measurements": {"area": 3.5}}},
]


def flat_xy(data):
    text = json.dumps(data)
    numbers = []

    def walk(value):
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            numbers.append(value[:2])
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key in ("geometry", "nucleusGeometry", "coordinates", "features", "geometries"):
                if value.get(key) is not None:
                    walk(value[key])

    walk(json.loads(text))
    return np.array(numbers, dtype=float)


@pytest.fixture
def result_json(tmp_path):
    """A result JSON as `napari-comir register --out` writes it (the whole report)."""
    result = RegistrationResult(T, 0.8, 0.2, "search", {"search": 0.1}, True, detail_score=2.0,
                                moving_shape=(80, 90))
    report = {**result.to_dict(), "fixed_pixel_size_um": None, "moving_pixel_size_um": None,
              "model": "bf-shg", "model_version": 1, "c4_average": False, "fixed": "shg.tif",
              "moving": "bf.tif"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def test_cli_geojson_forward_then_inverse_is_the_input(result_json, tmp_path, capsys):
    source = tmp_path / "he.geojson"
    source.write_text(json.dumps(QUPATH))
    on_fixed, back = tmp_path / "on_shg.geojson", tmp_path / "back.geojson"
    assert main(["apply", "--transform", str(result_json), "--geojson", str(source),
                 "--out", str(on_fixed)]) == 0
    assert "14 positions carried from the moving onto the fixed image" in capsys.readouterr().out
    carried = json.loads(on_fixed.read_text())
    assert np.allclose(flat_xy(carried), T.apply_xy(flat_xy(QUPATH) - 0.5) + 0.5)  # corner origin
    assert [f["properties"] for f in carried] == [f["properties"] for f in QUPATH]
    assert [f["id"] for f in carried] == ["a1", "c1"]
    assert main(["apply", "--transform", str(result_json), "--geojson", str(on_fixed),
                 "--out", str(back), "--inverse"]) == 0
    assert np.allclose(flat_xy(json.loads(back.read_text())), flat_xy(QUPATH), atol=1e-9, rtol=0)
    # The centre origin and µm are options.
    centre = tmp_path / "centre.geojson"
    assert main(["apply", "--transform", str(result_json), "--geojson", str(source), "--out",
                 str(centre), "--origin", "centre", "--moving-pixel-size", "0.5",
                 "--fixed-pixel-size", "0.5"]) == 0
    expected = T.apply_xy(flat_xy(QUPATH) / 0.5) * 0.5
    assert np.allclose(flat_xy(json.loads(centre.read_text())), expected)


def test_api_geojson_takes_a_result_or_an_exported_transform(tmp_path):
    from napari_comir.core.io.transform_formats import write_transform

    source = tmp_path / "he.geojson"
    source.write_text(json.dumps(QUPATH[0]))
    expected = api.apply_transform_to_geojson(T, source, tmp_path / "a.geojson")
    result = RegistrationResult(T, 0.8, 0.2, "search", {}, True)
    assert api.apply_transform_to_geojson(result, source, tmp_path / "b.geojson") == expected
    for name in ("t.json", "t.csv", "t.tfm", "t.ngff.json", "t.qupath.txt"):
        write_transform(T, tmp_path / name)
        out = api.apply_transform_to_geojson(tmp_path / name, source, tmp_path / "c.geojson")
        assert np.allclose(flat_xy(out), flat_xy(expected), atol=1e-6), name


def test_points_forward_then_back_is_identity():
    rng = np.random.default_rng(0)
    points_rc = rng.uniform(0, 100, (20, 2))
    on_fixed = api.apply_transform_to_points(T, points_rc)
    assert np.allclose(on_fixed, T.apply_rc(points_rc))
    assert np.allclose(api.apply_transform_to_points(T, on_fixed, inverse=True), points_rc,
                       atol=1e-9, rtol=0)
    on_fixed_xy = api.apply_transform_to_points(T, points_xy=points_rc[:, ::-1])
    assert np.allclose(on_fixed_xy, on_fixed[:, ::-1])  # the order given comes back
    with pytest.raises(InputError, match="one of the two"):
        api.apply_transform_to_points(T, points_rc, points_xy=points_rc)
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        api.apply_transform_to_points(T, [[1.0], [2.0]])


def test_cli_image_and_labels_both_ways(result_json, tmp_path, capsys):
    rng = np.random.default_rng(1)
    moving_shape, fixed_shape = (80, 90), (100, 110)
    channel = (rng.random(moving_shape) * 4000).astype(np.uint16)
    labels = np.zeros(moving_shape, np.uint16)
    labels[10:40, 20:50], labels[50:70, 60:85] = 3, 1200
    files = {"ch2.tif": channel, "labels.tif": labels, "bf.tif": np.zeros(moving_shape, np.uint8),
             "shg.tif": np.zeros(fixed_shape, np.uint8)}
    for name, image in files.items():
        write_tiff(tmp_path / name, image)
    run = lambda *args: main(["apply", "--transform", str(result_json), *map(str, args)])  # noqa: E731

    assert run("--image", tmp_path / "ch2.tif", "--like", tmp_path / "shg.tif",
               "--out", tmp_path / "ch2_on_shg.tif") == 0
    assert np.array_equal(tifffile.imread(tmp_path / "ch2_on_shg.tif"),
                          resample(channel, T, fixed_shape))
    assert run("--image", tmp_path / "labels.tif", "--labels", "--like", tmp_path / "shg.tif",
               "--out", tmp_path / "labels_on_shg.tif") == 0
    on_fixed = tifffile.imread(tmp_path / "labels_on_shg.tif")
    assert on_fixed.shape == fixed_shape and on_fixed.dtype == np.uint16
    assert set(np.unique(on_fixed)) == {0, 3, 1200}  # nearest neighbour: no new labels
    assert "labels carried from the moving onto the fixed image (100x110)" in capsys.readouterr().out
    assert run("--image", tmp_path / "labels_on_shg.tif", "--labels", "--inverse", "--like",
               tmp_path / "bf.tif", "--out", tmp_path / "labels_back.tif") == 0
    back = tifffile.imread(tmp_path / "labels_back.tif")
    assert back.shape == moving_shape and set(np.unique(back)) <= {0, 3, 1200}
    assert np.mean(back != labels) < 0.01  # nearest neighbour twice: at most a pixel at edges
    # Bilinear (no --labels) would have invented values between 0 and 1200.
    assert run("--image", tmp_path / "labels.tif", "--like", tmp_path / "shg.tif",
               "--out", tmp_path / "blended.tif") == 0
    assert len(np.unique(tifffile.imread(tmp_path / "blended.tif"))) > 3


def test_register_then_apply_matches_the_resampled_output(tmp_path):
    """The JSON `register --out` really writes is what `apply` reads."""
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((128, 128), seed=1)
    write_tiff(tmp_path / "bf.tif", bf)
    write_tiff(tmp_path / "shg.tif", shg)
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving",
                 str(tmp_path / "bf.tif"), "--out", str(tmp_path / "r.json"), "--resampled",
                 str(tmp_path / "bf_on_shg.tif"), "--transform", "rigid",
                 "--rotation-range", "10"]) == 0
    assert main(["apply", "--transform", str(tmp_path / "r.json"), "--image",
                 str(tmp_path / "bf.tif"), "--like", str(tmp_path / "shg.tif"), "--out",
                 str(tmp_path / "bf_applied.tif")]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "bf_applied.tif"),
                          tifffile.imread(tmp_path / "bf_on_shg.tif"))


def test_the_installed_command_runs_without_torch(result_json, tmp_path):
    """`apply` is quick: it never imports torch (checked in a fresh interpreter)."""
    source = tmp_path / "a.geojson"
    source.write_text(json.dumps(QUPATH))
    code = ("import sys; from napari_comir.cli import main; "
            f"rc = main(['apply', '--transform', {str(result_json)!r}, '--geojson', "
            f"{str(source)!r}, '--out', {str(tmp_path / 'b.geojson')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"]


@pytest.mark.parametrize("case, says", [
    ("not-json", "he.geojson: not JSON"),
    ("not-geojson", "he.geojson: not GeoJSON"),
    ("text-coordinates", "he.geojson: geometry.coordinates[0]: a position must be"),
    ("bad-transform", "r.json: not a JSON object"),
    ("singular-transform", "singular"),
    ("missing-transform", "transform file not found"),
    ("out-is-input", "--out"),
    ("image-without-like", "--image needs --like"),
    ("labels-with-geojson", "--labels: only with --image"),
    ("origin-with-image", "--origin: only with --geojson"),
    ("png-output", "name the image output .tif, .ome.tif"),
    ("rgb-labels", "a label image must be one plane"),
    ("missing-output-folder", "output folder does not exist"),
])
def test_bad_input_exits_2_with_one_line(case, says, result_json, tmp_path, capsys):
    geojson = tmp_path / "he.geojson"
    geojson.write_text(json.dumps(QUPATH))
    write_tiff(tmp_path / "shg.tif", np.zeros((20, 20), np.uint8))
    write_tiff(tmp_path / "rgb.tif", np.zeros((20, 20, 3), np.uint8))
    transform, out = str(result_json), str(tmp_path / "out.geojson")
    what = ["--geojson", str(geojson)]
    extra = []
    if case == "not-json":
        geojson.write_text("{this is not json")
    elif case == "not-geojson":
        geojson.write_text('{"type": "Banana", "coordinates": []}')
    elif case == "text-coordinates":
        geojson.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
            "type": "LineString", "coordinates": [["1", "2"], [3, 4]]}}))
    elif case == "bad-transform":
        result_json.write_text("[1, 2, 3]")
    elif case == "singular-transform":
        result_json.write_text(json.dumps({"matrix_xy": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}))
    elif case == "missing-transform":
        transform = str(tmp_path / "nowhere.json")
    elif case == "out-is-input":
        out = str(geojson)
    elif case == "image-without-like":
        what = ["--image", str(tmp_path / "shg.tif")]
        out = str(tmp_path / "out.tif")
    elif case == "labels-with-geojson":
        extra = ["--labels"]
    elif case == "origin-with-image":
        what = ["--image", str(tmp_path / "shg.tif"), "--like", str(tmp_path / "shg.tif")]
        extra, out = ["--origin", "centre"], str(tmp_path / "out.tif")
    elif case == "png-output":
        what = ["--image", str(tmp_path / "shg.tif"), "--like", str(tmp_path / "shg.tif")]
        out = str(tmp_path / "out.png")
    elif case == "rgb-labels":
        what = ["--image", str(tmp_path / "rgb.tif"), "--like", str(tmp_path / "shg.tif"),
                "--labels"]
        out = str(tmp_path / "out.tif")
    elif case == "missing-output-folder":
        out = str(tmp_path / "no" / "out.geojson")
    before = geojson.read_bytes()
    capsys.readouterr()
    assert main(["apply", "--transform", transform, *what, "--out", out, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-comir apply: error: ") and "\n" not in err
    assert says in err
    assert geojson.read_bytes() == before  # the input is never touched
    assert case == "out-is-input" or not (tmp_path / "out.geojson").exists()


def test_cli_carries_labels_of_a_whole_slide_into_a_pyramid(tmp_path):
    """A pyramidal label image is read lazily and written tile by tile as a pyramid, nearest
    neighbour (no label invented), with the target's pixel size."""
    from napari_comir.core.io.slides import open_slide
    from napari_comir.core.tiled_resample import resample_to_file

    labels = np.zeros((2600, 2400), np.uint16)
    labels[300:900, 400:1500], labels[1200:2400, 200:2000] = 7, 300
    transform = AffineTransform.similarity(4.0, 0.97, (35.0, -20.0))
    for name, image, size in (("labels", labels, None), ("fixed", np.zeros((2500, 2300), np.uint8), 0.8)):
        for _ in resample_to_file(image, AffineTransform.rigid(), image.shape, tmp_path / f"{name}.ome.tif",
                                  pixel_size_um=size, order=0):
            pass
    (tmp_path / "t.json").write_text(transform.to_json())
    assert main(["apply", "--transform", str(tmp_path / "t.json"), "--image",
                 str(tmp_path / "labels.ome.tif"), "--like", str(tmp_path / "fixed.ome.tif"),
                 "--labels", "--out", str(tmp_path / "carried.ome.tif")]) == 0
    with open_slide(tmp_path / "carried.ome.tif") as carried:
        assert carried.shape == (2500, 2300) and len(carried.levels) >= 2
        assert carried.pixel_size_um == pytest.approx(0.8)
        level0 = np.asarray(carried.levels[0])
        coarser = [set(np.unique(np.asarray(level))) for level in carried.levels[1:]]
    assert set(np.unique(level0)) == {0, 7, 300}
    assert all(values <= {0, 7, 300} for values in coarser)  # coarser levels invent no label
    np.testing.assert_array_equal(level0, resample(labels, transform, (2500, 2300), order=0))


def test_an_unreadable_image_closes_the_slide_opened_as_its_target(tmp_path, monkeypatch):
    """`apply --image BAD --like SLIDE`: the target slide, opened first for its grid, is closed
    when the image cannot be read (it was left to the garbage collector)."""
    from napari_comir.core import apply as apply_module
    from napari_comir.core.apply import image_file_events

    closed = []

    class Target:
        shape = (64, 64)

        def close(self):
            closed.append(True)

    def open_image(path):
        if str(path).endswith("like.tif"):
            return Target()
        raise InputError(f"{path}: not an image this can read")

    monkeypatch.setattr(apply_module, "open_image", open_image)
    with pytest.raises(InputError, match="not an image"):
        image_file_events(AffineTransform.rigid(), tmp_path / "bad.tif", tmp_path / "like.tif",
                          tmp_path / "out.tif")
    assert closed == [True]
    assert not (tmp_path / "out.tif").exists()


def test_a_bright_field_is_filled_with_its_background_outside_it(tmp_path):
    """A turned H&E resampled onto another grid: its corners are the slide's white, not black
    (black wedges read as glass no slide has); a dark-field image and labels keep 0 there,
    and so does noise, which has no background to tell."""
    from napari_comir.core.apply import apply_transform_to_image, apply_transform_to_image_file
    from napari_comir.core.background import background_value
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((256, 256), seed=1)
    turn = AffineTransform.about_center(25.0, (127.5, 127.5), (10.0, -6.0))
    white = background_value(bf)
    assert white > 0.9 * bf.max() and background_value(shg) == 0.0
    corner = (slice(0, 8), slice(0, 8))
    on_fixed = apply_transform_to_image(turn, bf, (256, 256))
    assert on_fixed.dtype == bf.dtype and np.all(np.abs(on_fixed[corner].astype(float) - white) <= 1)
    assert np.all(apply_transform_to_image(turn, shg, (256, 256))[corner] == 0)
    labels = (bf[..., 0] < 128).astype(np.uint8)
    assert np.all(apply_transform_to_image(turn, labels, (256, 256), labels=True)[corner] == 0)
    noise = np.random.default_rng(0).integers(0, 4000, (256, 256)).astype(np.uint16)
    assert background_value(noise) == 0.0
    # Written tile by tile (as slides and --resampled are): the same.
    tifffile.imwrite(tmp_path / "bf.tif", bf)
    tifffile.imwrite(tmp_path / "like.tif", shg)
    apply_transform_to_image_file(turn, tmp_path / "bf.tif", tmp_path / "like.tif",
                                      tmp_path / "bf_on_shg.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "bf_on_shg.tif")[corner], on_fixed[corner])
