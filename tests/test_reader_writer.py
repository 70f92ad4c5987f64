"""npe2 contributions: reader, transform writer, sample data and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io as skio

from napari_comir._reader import get_reader
from napari_comir._sample_data import TRUE_TRANSFORM_KEY, sample_pair, sample_pair_misaligned
from napari_comir._writer import write_transform
from napari_comir.core.errors import InputError
from napari_comir.core.transforms import AffineTransform

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "napari_comir" / "napari.yaml"


@pytest.fixture
def rgb_image(rng):
    return rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)


@pytest.fixture
def grey_image(rng):
    return rng.integers(0, 256, (32, 40), dtype=np.uint8)


def _read(path):
    reader = get_reader(str(path))
    assert callable(reader)
    return reader(str(path))


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".png"])
def test_reader_rgb_is_one_rgb_layer(tmp_path, rgb_image, suffix):
    path = tmp_path / f"core_A1{suffix}"
    if suffix == ".png":
        skio.imsave(path, rgb_image)
    else:
        tifffile.imwrite(path, rgb_image, photometric="rgb")
    [(data, kwargs, layer_type)] = _read(path)
    assert layer_type == "image" and kwargs["rgb"] is True and kwargs["name"] == "core_A1"
    np.testing.assert_array_equal(data, rgb_image)


@pytest.mark.parametrize("suffix", [".tiff", ".png"])
def test_reader_grey(tmp_path, grey_image, suffix):
    path = tmp_path / f"shg{suffix}"
    (skio.imsave if suffix == ".png" else tifffile.imwrite)(path, grey_image)
    [(data, kwargs, layer_type)] = _read(path)
    assert layer_type == "image" and "rgb" not in kwargs and kwargs["name"] == "shg"
    np.testing.assert_array_equal(data, grey_image)


def test_reader_list_of_files(tmp_path, grey_image, rgb_image):
    tifffile.imwrite(tmp_path / "a.tif", grey_image)
    tifffile.imwrite(tmp_path / "b.tif", rgb_image, photometric="rgb")
    paths = [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    layers = get_reader(paths)(paths)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["a", "b"]


def test_reader_3d_stack_is_a_clear_error(tmp_path, rng):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, rng.integers(0, 256, (5, 32, 32), dtype=np.uint8))
    reader = get_reader(str(path))
    assert callable(reader)  # the extension is ours: napari should show our message
    with pytest.raises(InputError, match="3-D volumes are not supported"):
        reader(str(path))


@pytest.mark.parametrize("name", ["notes.txt", "image.czi", "folder", "x.tif.bak"])
def test_reader_declines_other_files(name):
    assert get_reader(name) is None


def test_reader_declines_a_list_with_a_foreign_file():
    assert get_reader(["a.tif", "b.czi"]) is None


def test_writer_round_trip(tmp_path):
    transform = AffineTransform.rigid(12.5, (3.0, -4.5))
    attributes = {"name": "BF", "metadata": {"comir_transform": transform.to_dict()}}
    [written] = write_transform(str(tmp_path / "t.json"), np.zeros((4, 4)), attributes)
    assert written == str(tmp_path / "t.json")
    stored = json.loads(Path(written).read_text())
    assert stored["moving_layer"] == "BF"
    back = AffineTransform.from_json(written)
    np.testing.assert_allclose(back.matrix_xy, transform.matrix_xy, atol=1e-12)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary files left


def test_writer_appends_json_and_keeps_numpy_extras(tmp_path):
    meta = {"comir_transform": {**AffineTransform.rigid(-3.0, (1.0, 2.0)).to_dict(),
                                "matrix_xy": AffineTransform.rigid(-3.0, (1.0, 2.0)).matrix_xy,
                                "score": np.float32(0.75)}}
    [written] = write_transform(str(tmp_path / "t"), None, {"name": "BF", "metadata": meta})
    assert written.endswith("t.json")
    assert json.loads(Path(written).read_text())["score"] == pytest.approx(0.75)


@pytest.mark.parametrize("metadata", [None, {}, {"other": 1}])
def test_writer_without_registration_result(tmp_path, metadata):
    with pytest.raises(InputError, match="no CoMIR registration result; run Register first"):
        write_transform(str(tmp_path / "t.json"), None, {"name": "BF", "metadata": metadata})
    assert not any(tmp_path.iterdir())


def test_writer_refuses_a_singular_matrix(tmp_path):
    meta = {"comir_transform": {"matrix_xy": [[2.0, 1.0, 0], [4.0, 2.0, 0], [0, 0, 1]]}}
    with pytest.raises(InputError, match="singular"):
        write_transform(str(tmp_path / "t.json"), None, {"name": "BF", "metadata": meta})


def _check_pair_layers(layers, bf_name):
    (bf, bf_kwargs, bf_type), (shg, shg_kwargs, shg_type) = layers
    assert bf_type == shg_type == "image"
    assert bf_kwargs["name"] == bf_name and bf_kwargs["rgb"] is True
    assert shg_kwargs["name"] == "SHG (sample)" and shg_kwargs["colormap"] == "gray"
    assert bf.dtype == shg.dtype == np.uint8
    assert bf.shape == (*shg.shape, 3)
    return bf_kwargs


def test_sample_pair_layers():
    _check_pair_layers(sample_pair(), "BF (sample)")


def test_sample_pair_misaligned_carries_the_true_transform():
    kwargs = _check_pair_layers(sample_pair_misaligned(), "BF (sample, misaligned)")
    true = AffineTransform.from_dict(kwargs["metadata"][TRUE_TRANSFORM_KEY])
    assert true.angle_deg == pytest.approx(23.0)
    json.dumps(kwargs["metadata"])  # plain Python: survives napari session saving


def test_manifest_loads_and_names_our_commands():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    python_names = {c.id: c.python_name for c in manifest.contributions.commands}
    assert python_names["napari-comir.read_image"] == "napari_comir._reader:get_reader"
    assert python_names["napari-comir.write_transform"] == "napari_comir._writer:write_transform"
    assert python_names["napari-comir.sample_pair"] == "napari_comir._sample_data:sample_pair"
    assert python_names["napari-comir.sample_pair_misaligned"] == (
        "napari_comir._sample_data:sample_pair_misaligned")


def test_pixel_sizes_are_read_where_the_file_means_them(tmp_path):
    from napari_comir.core.io import read_pixel_size

    image = np.zeros((32, 32), np.uint8)
    tifffile.imwrite(tmp_path / "ome.ome.tif", image, metadata={"PhysicalSizeX": 0.65,
                                                                 "PhysicalSizeXUnit": "µm"})
    tifffile.imwrite(tmp_path / "ome_nm.ome.tif", image, metadata={"PhysicalSizeX": 325.0,
                                                                    "PhysicalSizeXUnit": "nm"})
    tifffile.imwrite(tmp_path / "imagej.tif", image, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(40000, 40000), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "screen.tif", image, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", image)
    assert read_pixel_size(tmp_path / "ome.ome.tif") == pytest.approx(0.65)
    assert read_pixel_size(tmp_path / "ome_nm.ome.tif") == pytest.approx(0.325)
    assert read_pixel_size(tmp_path / "imagej.tif") == pytest.approx(0.5)
    assert read_pixel_size(tmp_path / "cm.tif") == pytest.approx(0.25)
    assert read_pixel_size(tmp_path / "screen.tif") is None  # 72 dpi: 353 µm means "unknown"
    assert read_pixel_size(tmp_path / "none.tif") is None
    assert read_pixel_size(tmp_path / "missing.tif") is None


def test_reader_sets_the_scale_from_the_pixel_size(tmp_path):
    path = tmp_path / "shg.ome.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8), metadata={"PhysicalSizeX": 0.65})
    (_, kwargs, _), = get_reader(str(path))(str(path))
    assert kwargs["scale"] == pytest.approx((0.65, 0.65)) and kwargs["name"] == "shg"
