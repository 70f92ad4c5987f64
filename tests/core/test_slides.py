"""Whole slides: lazy pyramid levels, tile-by-tile resampling into pyramids, the file pipeline."""

import json
import os

import numpy as np
import pytest
import tifffile

from napari_comir.cli import main
from napari_comir.core.errors import InputError
from napari_comir.core.io.slides import Slide, open_image, open_slide, slide_from_levels
from napari_comir.core.resampling import resample
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.core.tiled_resample import resample_tiles, resample_to_file
from napari_comir.core.transforms import AffineTransform, corner_error

SHEARED = AffineTransform.from_matrix_xy(np.array([[0.9513, 0.1037, 30.317], [-0.1191, 1.0213, -40.733],
                                                  [0, 0, 1]]))


def _write_pyramid(path, image, pixel_size_um=None, transform=None, **options):
    """``image`` (moved by ``transform``) as a pyramidal OME-TIFF; returns the last event."""
    *_, last = resample_to_file(image, transform or AffineTransform.rigid(), image.shape[:2], path,
                                pixel_size_um=pixel_size_um, **options)
    return last


@pytest.mark.parametrize("channels", [(), (3,)])
@pytest.mark.parametrize("order", [0, 1])
def test_tiles_equal_whole_image_resampling(rng, channels, order):
    image = (rng.random((300, 410) + channels) * 255).astype(np.uint8)
    whole = resample(image, SHEARED, (330, 370), order=order)
    tiled = np.zeros_like(whole)
    for rows, cols, pixels in resample_tiles(image, SHEARED, (330, 370), tile=64, order=order):
        tiled[rows, cols] = pixels
    difference = np.abs(tiled.astype(int) - whole)
    if order == 0:  # labels: the very same pixels
        assert difference.max() == 0
    else:  # float32 bilinear weights: a rounding tie may fall the other way, nothing more
        assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
        assert np.mean(whole > 0) > 0.6  # the tiles hold the image, not only the background


def test_bilinear_resampling_of_integer_images_matches_scipy_constant_mode(rng):
    from scipy import ndimage

    image = (rng.random((97, 131, 3)) * 255).astype(np.uint8)
    for transform in (AffineTransform.rigid(), AffineTransform.rigid(0.0, (3.0, -2.0)), SHEARED):
        fast = resample(image, transform, (110, 120), cval=40)
        inverse = transform.inverse().matrix_rc
        reference = np.stack([ndimage.affine_transform(image[..., c].astype(float), inverse[:2, :2],
                                                       offset=inverse[:2, 2], output_shape=(110, 120),
                                                       order=1, mode="constant", cval=40)
                              for c in range(3)], axis=-1)
        difference = np.abs(fast.astype(int) - np.rint(reference))
        # the same edge (pixels outside the outermost centres are cval) and the same values
        assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, transform


def test_ome_tiff_pyramid_is_read_back_lazily_with_its_pixel_size(tmp_path, rng):
    image = (rng.random((2600, 2100, 3)) * 255).astype(np.uint8)
    last = _write_pyramid(tmp_path / "x.ome.tif", image, pixel_size_um=0.25, compression="zlib")
    assert "3 level(s)" in last.message
    with open_slide(tmp_path / "x.ome.tif") as slide:
        assert slide.downsamples == [1, 2, 4] and slide.pixel_size_um == pytest.approx(0.25)
        assert [level.shape for level in slide.levels] == [(2600, 2100, 3), (1300, 1050, 3), (650, 525, 3)]
        np.testing.assert_array_equal(slide[1000:1100, 7:2000], image[1000:1100, 7:2000])
        coarse = image[:2600, :2100].astype(np.float32).reshape(1300, 2, 1050, 2, 3).mean(axis=(1, 3))
        np.testing.assert_allclose(slide.levels[1][:, :], np.rint(coarse), atol=0.5)
        assert slide.level_at_most(3.0) == 1
    assert isinstance(open_image(tmp_path / "x.ome.tif"), Slide)


def test_plain_tiff_is_one_level_with_resolution_tags_and_small_files_stay_arrays(tmp_path, rng):
    image = (rng.random((700, 500)) * 65535).astype(np.uint16)
    _write_pyramid(tmp_path / "x.tif", image, pixel_size_um=0.5)
    array = open_image(tmp_path / "x.tif")
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, image)
    with open_slide(tmp_path / "x.tif") as slide:
        assert len(slide.levels) == 1 and slide.pixel_size_um == pytest.approx(0.5)


def test_planar_rgb_is_read_channels_last_and_stacks_are_refused(tmp_path, rng):
    image = (rng.random((3, 200, 300)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", image, photometric="rgb", planarconfig="separate")
    with open_slide(tmp_path / "planar.tif") as slide:
        np.testing.assert_array_equal(slide[:, :], np.moveaxis(image, 0, -1))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 64), np.uint8))
    with pytest.raises(InputError, match="not a 2-D grey or RGB image"):
        open_slide(tmp_path / "stack.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(InputError, match="cannot read|holds no image"):
        open_slide(tmp_path / "broken.tif")


def test_ome_zarr_output_is_valid_ngff_with_physical_scales(tmp_path, rng):
    import zarr
    from ome_zarr_models.v04.image import Image

    image = (rng.random((2300, 1200, 3)) * 255).astype(np.uint8)
    _write_pyramid(tmp_path / "x.ome.zarr", image, pixel_size_um=0.5)
    group = zarr.open_group(tmp_path / "x.ome.zarr", mode="r")
    Image.from_zarr(group)  # raises on invalid NGFF 0.4 metadata
    np.testing.assert_array_equal(np.moveaxis(group["0"][:, :100, :50], 0, -1), image[:100, :50])
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert datasets[1]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0]
    assert len(datasets) == 3  # 2300, 1150, 575 px: halved until the long side fits 1024
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.ome.zarr").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    _write_pyramid(tmp_path / "x.ome.zarr", image[::-1], pixel_size_um=0.5)  # replaced whole
    np.testing.assert_array_equal(np.moveaxis(zarr.open_group(tmp_path / "x.ome.zarr")["0"][:, :5, :5],
                                              0, -1), image[::-1][:5, :5])


def test_a_failed_resampling_leaves_no_file(tmp_path, rng):
    class Failing:
        shape, dtype, ndim = (3000, 3000), np.dtype(np.uint8), 2
        reads = 0

        def __getitem__(self, key):
            Failing.reads += 1
            if Failing.reads > 3:
                raise OSError("disk went away")
            return np.zeros((key[0].stop - key[0].start, key[1].stop - key[1].start), np.uint8)

    with pytest.raises(OSError):
        _write_pyramid(tmp_path / "x.ome.tif", Failing())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="name the image output .tif"):
        _write_pyramid(tmp_path / "x.png", np.zeros((10, 10), np.uint8))


def test_slide_from_open_levels_reads_like_a_slide(rng):
    image = rng.random((400, 300)).astype(np.float32)
    slide = slide_from_levels([image, image[::2, ::2]], pixel_size_um=2.0)
    assert slide.downsamples == [1, 2] and slide.shape == (400, 300)
    np.testing.assert_array_equal(slide[10:20, 30:40], image[10:20, 30:40])


def test_register_command_on_pyramidal_files(tmp_path):
    """Pyramidal OME-TIFF inputs are read lazily and registered coarse to fine; the resampled
    output is a pyramid with the fixed pixel size; the ITK export reads back in SimpleITK."""
    import SimpleITK as sitk

    bf, shg, truth = misaligned_pair((1600, 1600), seed=3, angle_deg=-61.0, translation_xy=(23.0, -14.0))
    _write_pyramid(tmp_path / "shg.ome.tif", shg, pixel_size_um=2.0)
    _write_pyramid(tmp_path / "bf.ome.tif", bf, pixel_size_um=2.0)
    assert isinstance(open_image(tmp_path / "bf.ome.tif"), Slide)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["register", "--fixed", str(tmp_path / "shg.ome.tif"), "--moving",
                 str(tmp_path / "bf.ome.tif"), "--out", str(out / "r.json"), "--resampled",
                 str(out / "bf_on_shg.ome.tif"), "--export-itk", str(out / "r.tfm"),
                 "--export-ngff", str(out / "r.ngff.json"), "--device", "cpu"]) == 0
    report = json.loads((out / "r.json").read_text())
    found = AffineTransform.from_dict(report)
    assert report["method"] == "pyramid" and report["success_likely"]
    assert report["fixed_pixel_size_um"] == pytest.approx(2.0)
    assert corner_error(truth, found, bf.shape) < 0.02 * bf.shape[1]
    with open_slide(out / "bf_on_shg.ome.tif") as registered:
        assert registered.shape == (1600, 1600, 3) and len(registered.levels) >= 2
        assert registered.pixel_size_um == pytest.approx(2.0)
        reference = resample(bf, found, shg.shape)
        # RGB tiles are JPEG by default (the input pyramid's too): close, not equal
        difference = np.abs(registered[700:900, 700:900].astype(int) - reference[700:900, 700:900])
        assert difference.mean() <= 3
    with tifffile.TiffFile(out / "bf_on_shg.ome.tif") as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.JPEG
    itk = sitk.ReadTransform(str(out / "r.tfm"))
    fixed_xy = np.array([[100.0, 200.0], [1500.0, 900.0]])
    moving_xy = np.array([itk.TransformPoint(tuple(p * 2.0)) for p in fixed_xy]) / 2.0
    np.testing.assert_allclose(found.apply_xy(moving_xy), fixed_xy, atol=1e-6)


def test_the_report_maps_every_pair_of_pyramid_levels(tmp_path):
    bf, shg, truth = misaligned_pair((1200, 1200), seed=4, angle_deg=20.0, translation_xy=(9.0, 5.0))
    _write_pyramid(tmp_path / "shg.ome.tif", shg)
    _write_pyramid(tmp_path / "bf.ome.tif", bf)
    assert main(["register", "--fixed", str(tmp_path / "shg.ome.tif"), "--moving",
                 str(tmp_path / "bf.ome.tif"), "--out", str(tmp_path / "r.json"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    found = AffineTransform.from_dict(report)
    assert [level["fixed_downsample"] for level in report["levels"]] == [1, 2]
    level = AffineTransform.from_matrix_xy(np.array(report["levels"][1]["matrix_xy"]))
    moving_xy = np.array([[100.0, 300.0], [500.0, 20.0]])  # level-1 pixels: full (2x + 0.5)
    np.testing.assert_allclose(level.apply_xy(moving_xy) * 2 + 0.5,
                               found.apply_xy(moving_xy * 2 + 0.5), atol=1e-9)


def test_jpeg_tiled_pyramid_like_an_svs_is_read_lazily(tmp_path, rng):
    """A scanner's tiled, JPEG-compressed RGB pyramid (SubIFDs), as SVS-like TIFFs are."""
    image = (rng.random((1500, 1300, 3)) * 64 + 96).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "scan.tif", bigtiff=True) as tiff:
        tiff.write(image, tile=(256, 256), compression="jpeg", photometric="rgb", subifds=1)
        tiff.write(image[::2, ::2], tile=(256, 256), compression="jpeg", photometric="rgb",
                   subfiletype=1)
    with open_slide(tmp_path / "scan.tif") as slide:
        assert slide.downsamples == [1, 2]
        region = slide[300:400, 500:700]
        assert region.shape == (100, 200, 3)
        assert np.abs(region.astype(int) - image[300:400, 500:700]).mean() < 20  # lossy JPEG


def _levels(path):
    """Every level of a written pyramid, read whole (small test images)."""
    with open_slide(path) as slide:
        return [level[:, :] for level in slide.levels]


@pytest.mark.parametrize("channels, order, compression", [
    ((), 1, "zlib"), ((3,), 1, "zstd"), ((), 0, "lzw"), ((3,), 1, "jpeg")])
def test_parallel_writing_gives_the_serial_pixels(tmp_path, rng, channels, order, compression):
    """Tiles resampled, averaged into levels and encoded on 3 threads: the very file contents
    one thread writes (lossless and JPEG alike: each tile is encoded on its own)."""
    image = (rng.random((1500, 1300) + channels) * 255).astype(np.uint8)
    written = []
    for workers in (1, 3):
        path = tmp_path / f"{workers}.ome.tif"
        _write_pyramid(path, image, transform=SHEARED, order=order, compression=compression,
                       tile=512, workers=workers)
        written.append(_levels(path))
    assert len(written[0]) == 2
    for serial, parallel in zip(*written, strict=True):
        np.testing.assert_array_equal(parallel, serial)
    if compression != "jpeg":  # lossless: the whole-image resampling itself (8-bit bilinear
        # in float32: a rounding tie may fall the other way)
        difference = np.abs(written[1][0].astype(int) - resample(image, SHEARED, image.shape[:2],
                                                                 order=order))
        assert difference.max() <= order and np.mean(difference > 0) < 5e-3


def test_rgb_is_jpeg_by_default_grey_lossless(tmp_path):
    """By default 8-bit RGB tiles are JPEG (YCbCr, as scanners write them) within a few grey
    levels of the pixels, and a grey image is zlib, lossless; both read back by tifffile."""
    bf, shg, _ = misaligned_pair((1100, 1100), seed=2)
    for name, image in (("bf", bf), ("shg", shg)):
        _write_pyramid(tmp_path / f"{name}.ome.tif", image)
    with tifffile.TiffFile(tmp_path / "bf.ome.tif") as tiff:
        page = tiff.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG
        assert page.photometric == tifffile.PHOTOMETRIC.YCBCR and tiff.is_ome
        difference = np.abs(page.asarray().astype(int) - bf)
    assert difference.mean() < 3 and np.percentile(difference, 99) <= 16, np.percentile(difference, 99)
    with tifffile.TiffFile(tmp_path / "shg.ome.tif") as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    np.testing.assert_array_equal(_levels(tmp_path / "shg.ome.tif")[0], shg)
    assert (tmp_path / "bf.ome.tif").stat().st_size < (tmp_path / "shg.ome.tif").stat().st_size * 3


@pytest.mark.parametrize("image, options, match", [
    (np.zeros((80, 90), np.int32), dict(order=0, compression="jpeg"), "JPEG cannot hold a label"),
    (np.zeros((80, 90, 3), np.uint16), dict(compression="jpeg"), "JPEG cannot hold uint16"),
    (np.zeros((80, 90), np.uint8), dict(compression="webp"), "compression must be one of"),
    (np.zeros((80, 90), np.uint8), dict(compression="zlib", name="x.ome.zarr"), "OME-Zarr"),
    (np.zeros((80, 90), np.uint8), dict(workers=0), "workers must be"),
])
def test_a_compression_that_cannot_hold_the_pixels_is_refused_before_any_work(tmp_path, image,
                                                                               options, match):
    path = tmp_path / options.pop("name", "x.ome.tif")
    with pytest.raises(InputError, match=match):
        _write_pyramid(path, image, **options)
    assert list(tmp_path.iterdir()) == []


def test_apply_command_takes_a_compression(tmp_path, rng):
    image = (rng.random((300, 200, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="rgb")
    (tmp_path / "t.json").write_text(AffineTransform.rigid(0.0, (0, 0)).to_json())
    assert main(["apply", "--transform", str(tmp_path / "t.json"), "--image", str(tmp_path / "in.tif"),
                 "--like", str(tmp_path / "in.tif"), "--out", str(tmp_path / "out.tif"),
                 "--compression", "lzw"]) == 0
    with tifffile.TiffFile(tmp_path / "out.tif") as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.LZW
        np.testing.assert_array_equal(tiff.pages[0].asarray(), image)


def test_register_refuses_a_compression_its_output_cannot_have_before_any_work(tmp_path, capsys):
    bf, shg, _ = misaligned_pair((128, 128), seed=0)
    tifffile.imwrite(tmp_path / "bf.tif", bf, photometric="rgb")
    tifffile.imwrite(tmp_path / "shg.tif", shg)
    status = main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                   "--out", str(tmp_path / "r.json"), "--resampled", str(tmp_path / "x.ome.zarr"),
                   "--compression", "zlib", "--device", "cpu"])
    assert status == 2 and "OME-Zarr is written with zarr's own" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bf.tif", "shg.tif"]


def test_a_field_found_on_a_coarse_level_is_lifted_to_level_0():
    """Nodes k times further apart, displacements k times longer: the lifted transform maps
    level-0 points as the level's transform maps their level pixels, both ways."""
    from napari_comir.core.evaluation import smooth_deformation
    from napari_comir.core.field_transform import DisplacementFieldTransform
    from napari_comir.core.pyramid import _Reduced
    from napari_comir.core.pyramid_deformable import field_to_levels, lift_field

    affine = AffineTransform.from_matrix_xy(SHEARED.matrix_xy)
    fixed_level = _Reduced(np.zeros((100, 120)), 4)
    moving_level = _Reduced(np.zeros((200, 240)), 2)
    level_affine = fixed_level.to_full().inverse().compose(affine).compose(moving_level.to_full())
    bend = smooth_deformation((100, 120), 5.0, np.random.default_rng(0), smoothness_px=20.0)
    on_level = DisplacementFieldTransform.from_displacement(level_affine, bend.displacement_xy,
                                                            bend.spacing_px)
    lifted = lift_field(on_level, fixed_level, affine, (400, 480))
    assert lifted.spacing_px == 4 * on_level.spacing_px
    moving_xy = np.random.default_rng(1).uniform(50, 350, size=(100, 2))
    through_level = fixed_level.to_full().apply_xy(
        on_level.apply_xy(moving_level.to_full().inverse().apply_xy(moving_xy)))
    np.testing.assert_allclose(lifted.apply_xy(moving_xy), through_level, atol=0.1)
    fixed_xy = np.random.default_rng(2).uniform(50, 350, size=(100, 2))
    through_level = moving_level.to_full().apply_xy(
        on_level.inverse().apply_xy(fixed_level.to_full().inverse().apply_xy(fixed_xy)))
    np.testing.assert_allclose(lifted.inverse().apply_xy(fixed_xy), through_level, atol=0.1)
    assert abs(lifted.max_displacement_px - 4 * on_level.max_displacement_px) < 0.5
    back = field_to_levels(lifted, 4, 2)  # and down again, as a review of coarse levels warps
    np.testing.assert_allclose(back.apply_xy(moving_level.to_full().inverse().apply_xy(moving_xy)),
                               on_level.apply_xy(moving_level.to_full().inverse().apply_xy(moving_xy)),
                               atol=0.05)


@pytest.fixture(scope="module")
def bent_slides(tmp_path_factory):
    """A synthetic 1600 px pair, its BF bent by a smooth field (up to 40 px), as pyramidal
    OME-TIFFs (2 µm px); ``truth(bend(x))`` maps the bent BF onto the SHG."""
    from napari_comir.core.evaluation import smooth_deformation
    from napari_comir.core.field_transform import resample as resample_field

    folder = tmp_path_factory.mktemp("slides")
    bf, shg, truth = misaligned_pair((1600, 1600), seed=3, angle_deg=6.0, translation_xy=(12.0, -8.0))
    bend = smooth_deformation(shg.shape, 40.0, np.random.default_rng(5), smoothness_px=400.0,
                              spacing_px=16.0)
    bent = resample_field(bf, bend.inverse(), bf.shape[:2], cval=255)
    _write_pyramid(folder / "shg.ome.tif", shg, pixel_size_um=2.0)
    _write_pyramid(folder / "bf.ome.tif", bent, pixel_size_um=2.0, compression="zlib")  # exact
    return folder, bent, shg, lambda xy: truth.apply_xy(bend.apply_xy(xy)), truth


def test_whole_slide_field_is_fitted_on_a_level_and_beats_the_affine(bent_slides):
    """From the true affine part, the field fitted on a level twice as coarse (1024 px), lifted
    to level 0, is kept and finds the bend to about 2 px where the affine misses by 14."""
    from napari_comir import api
    from napari_comir.core.pyramid_deformable import register_pyramid_deformable

    folder, *_, true_xy, truth = bent_slides
    with open_slide(folder / "shg.ome.tif") as fixed, open_slide(folder / "bf.ome.tif") as moving:
        found = register_pyramid_deformable(api.load_model("bf-shg", "cpu"), fixed, moving, truth,
                                            side=1024, device="cpu")
    assert found.kept, found.reasons
    assert found.transform.spacing_px >= 8  # nodes of the 4 px-spaced level field, 2x apart
    moving_xy = np.random.default_rng(6).uniform(300, 1300, size=(300, 2))
    error = np.linalg.norm(found.transform.apply_xy(moving_xy) - true_xy(moving_xy), axis=1)
    affine_error = np.linalg.norm(truth.apply_xy(moving_xy) - true_xy(moving_xy), axis=1)
    assert np.median(error) < 2.5 and np.median(affine_error) > 10, (np.median(error),
                                                                     np.median(affine_error))


@pytest.mark.slow
def test_register_command_deformable_on_pyramidal_files(bent_slides, tmp_path):
    """`register --transform deformable` on two pyramids: registered coarse to fine, the field
    stage's verdict in the report, the resampled pyramid written tile by tile through the
    result (each tile equal to the whole-image warp), the elastix export beside it."""
    from napari_comir.core.field_transform import resample as resample_field
    from napari_comir.core.io.transform_formats import read_transform

    folder, bent, shg, *_ = bent_slides
    assert main(["register", "--fixed", str(folder / "shg.ome.tif"), "--moving",
                 str(folder / "bf.ome.tif"), "--out", str(tmp_path / "r.json"), "--transform",
                 "deformable", "--resampled", str(tmp_path / "bf_on_shg.ome.tif"),
                 "--compression", "zlib", "--export-itk", str(tmp_path / "r.tfm"),
                 "--export-elastix", str(tmp_path / "r.elastix.txt"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "pyramid" and report["success_likely"]
    assert (report["transform"] == "deformable") == report["deformable"]["kept"]
    found = read_transform(tmp_path / "r.tfm")
    with open_slide(tmp_path / "bf_on_shg.ome.tif") as registered:
        assert registered.shape == (1600, 1600, 3) and len(registered.levels) >= 2
        window = resample_field(bent, found, shg.shape)[600:1100, 600:1100]
        assert np.abs(registered[600:1100, 600:1100].astype(int) - window).max() <= 1
    assert (tmp_path / "r.elastix.txt").is_file()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.float32])
def test_pyramid_levels_are_rounded_block_means(tmp_path, rng, dtype):
    """A coarser level is the 2 x 2 mean of the finer one, rounded half to even for integers
    (8 and 16 bits summed as integers, the rest as floats: the same pixels)."""
    import zarr

    from napari_comir.core.io.slides import add_pyramid_levels

    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    image = (rng.integers(info.min, info.max + 1, (2100, 1030, 3), dtype=dtype) if info
             else rng.random((2100, 1030, 3)).astype(dtype))
    group = zarr.open_group(tmp_path / "levels.zarr", mode="w")
    group.create_array("0", shape=image.shape, chunks=(512, 512, 3), dtype=dtype)[...] = image
    levels = add_pyramid_levels(group, workers=2)
    expected = image[:2100, :1030].astype(np.float64).reshape(1050, 2, 515, 2, 3).mean(axis=(1, 3))
    expected = np.rint(expected) if info else expected
    np.testing.assert_allclose(levels[1][...], expected.astype(dtype), rtol=1e-6)
    assert [level.shape[:2] for level in levels] == [(2100, 1030), (1050, 515), (525, 257)]


def _writer_threads() -> list:
    import threading

    return [thread for thread in threading.enumerate() if thread.name == "napari-comir-writer"]


@pytest.mark.parametrize("stage", ["resample", "write"])
@pytest.mark.parametrize("name", ["x.ome.tif", "x.ome.zarr", "x.tif"])
def test_a_stopped_write_leaves_nothing_and_no_thread(tmp_path, rng, name, stage):
    """Stop (the generator closed) while tiles stream into the output, or while the coarser
    levels are written: no file, no temporary data, and the TIFF's writing thread has ended."""
    image = (rng.random((3000, 3000, 3)) * 255).astype(np.uint8)
    events = resample_to_file(image, SHEARED, (3000, 3000), tmp_path / name, workers=2)
    for event in events:
        if event.stage == stage and (stage == "write" or event.step >= 2):
            break
    else:
        pytest.fail(f"no {stage} event")
    events.close()
    assert list(tmp_path.iterdir()) == [] and _writer_threads() == []


def test_an_error_while_tiles_stream_is_raised_and_leaves_nothing(tmp_path, rng):
    image = (rng.random((3000, 3000)) * 255).astype(np.uint8)

    class Damaged:  # a slide whose tiles fail to decode part-way
        shape, dtype, ndim = image.shape, image.dtype, 2
        reads = 0

        def __getitem__(self, key):
            Damaged.reads += 1
            if Damaged.reads > 4:
                raise InputError("x.tif: cannot read the image's tiles")
            return image[key]

    with pytest.raises(InputError, match="cannot read the image's tiles"):
        list(resample_to_file(Damaged(), SHEARED, (3000, 3000), tmp_path / "x.ome.tif", workers=2))
    assert list(tmp_path.iterdir()) == [] and _writer_threads() == []


@pytest.mark.parametrize("channels", [(), (3,)])
def test_ome_zarr_and_ome_tiff_hold_the_same_pyramid(tmp_path, rng, channels):
    """Both outputs are made from the same tiles: every level the same pixels."""
    import zarr

    image = (rng.random((2600, 2200) + channels) * 255).astype(np.uint8)
    for name in ("x.ome.tif", "x.ome.zarr"):
        _write_pyramid(tmp_path / name, image, transform=SHEARED, compression="zlib" if "tif" in name
                       else "auto", workers=2)
    tiff_levels = _levels(tmp_path / "x.ome.tif")
    group = zarr.open_group(tmp_path / "x.ome.zarr", mode="r")
    zarr_levels = [np.moveaxis(group[str(k)][...], 0, -1) if channels else group[str(k)][...]
                   for k in range(len(group.attrs["multiscales"][0]["datasets"]))]
    assert [level.shape for level in zarr_levels] == [level.shape for level in tiff_levels]
    assert len(tiff_levels) == 3
    for tiff_level, zarr_level in zip(tiff_levels, zarr_levels, strict=True):
        np.testing.assert_array_equal(zarr_level, tiff_level)
