"""`napari-comir register --transform deformable` end to end: a known smooth deformation of a
real aligned BF/SHG pair found, exported, and carried by `napari-comir apply` (as the issue's
benchmark drives it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_comir import api
from napari_comir.cli import main
from napari_comir.core.errors import InputError
from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform, resample
from napari_comir.core.io import read_image, write_tiff
from napari_comir.core.io.transform_formats import read_transform
from napari_comir.core.transforms import AffineTransform

NAME = "sa_stroma_pancreas_2000_86"  # a train pair with a strong SHG


@pytest.fixture(scope="module")
def deformed_pair(bf_shg_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    bf, shg = read_image(bf_shg_dir / f"{NAME}_BF.tif"), read_image(bf_shg_dir / f"{NAME}_SHG.tif")
    shape = shg.shape[:2]
    true = smooth_deformation(shape, 8.0, np.random.default_rng(1))
    write_tiff(folder / "shg.tif", shg)
    write_tiff(folder / "bf.tif", resample(bf, true.inverse(), shape))  # true maps it onto shg
    return folder, true


def test_register_deformable_then_apply_geojson(deformed_pair, tmp_path, capsys):
    folder, true = deformed_pair
    out = tmp_path / "r.json"
    assert main(["register", "--fixed", str(folder / "shg.tif"), "--moving", str(folder / "bf.tif"),
                 "--out", str(out), "--transform", "deformable", "--rotation-range", "10",
                 "--fixed-pixel-size", "1", "--moving-pixel-size", "1",
                 "--export-itk", str(tmp_path / "r.tfm"),
                 "--export-ngff", str(tmp_path / "r.ngff.zarr"),
                 "--export-elastix", str(tmp_path / "r.elastix.txt")]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["deformable"]["kept"], report["deformable"]
    assert report["transform"] == "deformable"
    assert "displacement field: points moved" in printed and "on average over the overlap" in printed
    moving_xy = np.random.default_rng(2).uniform(100, 412, size=(30, 2))
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "MultiPoint", "coordinates": moving_xy.tolist()}}))
    mapped = tmp_path / "mapped.geojson"
    assert main(["apply", "--transform", str(out), "--geojson", str(points), "--out", str(mapped),
                 "--origin", "centre"]) == 0
    found_xy = np.array(json.loads(mapped.read_text())["geometry"]["coordinates"])
    error = np.linalg.norm(found_xy - true.apply_xy(moving_xy), axis=1)
    affine = DisplacementFieldTransform.from_dict(report).affine
    affine_error = np.linalg.norm(affine.apply_xy(moving_xy) - true.apply_xy(moving_xy), axis=1)
    # the pair itself is aligned to 1-2 px only (../shared/data/bf_shg/README)
    assert np.median(error) < 1.5 and np.median(error) < 0.6 * np.median(affine_error), (
        np.median(error), np.median(affine_error))
    assert report["exports"]["elastix"] == str(tmp_path / "r.elastix.txt")
    assert (tmp_path / "r.elastix.field.mha").is_file()  # transformix reads it: test_field_formats
    assert str(tmp_path / "r.elastix.field.txt") in (tmp_path / "r.elastix.txt").read_text()
    for export in ("r.tfm", "r.ngff.zarr"):  # the exports are the same transform
        np.testing.assert_allclose(read_transform(tmp_path / export).apply_xy(moving_xy), found_xy,
                                   atol=0.05)


def test_a_finer_fixed_image_gets_its_field_on_its_own_grid(deformed_pair):
    """With the fixed image's pixels finer (pixel sizes given), the CoMIRs are computed at the
    coarser size; the field must still be fitted on the fixed image's own grid, where the affine
    result maps. It was fitted on the shrunk fixed CoMIR: the details scored 0.2 there (chance),
    so a bend the same pair at one pixel size recovers was refused."""
    folder, true = deformed_pair
    enlarge = AffineTransform.similarity(0.0, 1.5)
    shg = read_image(folder / "shg.tif")
    fixed = resample(shg, enlarge, (768, 768))
    result = api.register_multimodal(fixed, read_image(folder / "bf.tif"), transform="deformable",
                                     rotation_range=10, fixed_pixel_size=0.5, moving_pixel_size=0.75)
    assert result.deformable["kept"], result.deformable["reasons"]
    moving_xy = np.random.default_rng(2).uniform(100, 412, size=(30, 2))
    truth = enlarge.apply_xy(true.apply_xy(moving_xy))
    error = np.linalg.norm(result.transform.apply_xy(moving_xy) - truth, axis=1)
    affine_error = np.linalg.norm(result.transform.affine.apply_xy(moving_xy) - truth, axis=1)
    assert np.median(error) < 0.6 * np.median(affine_error), (np.median(error), np.median(affine_error))


def test_deformable_refuses_matrix_exports_before_any_work(deformed_pair, tmp_path):
    folder, *_ = deformed_pair
    for flag, name in (("--export-csv", "r.csv"), ("--export-qupath", "r.qupath.txt"),
                       ("--export-ngff", "r.ngff.json")):
        assert main(["register", "--fixed", str(folder / "shg.tif"), "--moving",
                     str(folder / "bf.tif"), "--out", str(tmp_path / "r.json"), "--transform",
                     "deformable", flag, str(tmp_path / name)]) == 2
        assert not (tmp_path / "r.json").exists()
    with pytest.raises(InputError, match="deformable"):
        api.registration_events(np.zeros((64, 64)), np.zeros((64, 64)), transform="bspline")


def test_options_take_deformable_and_register_affine_first():
    from napari_comir.pipeline import RegistrationOptions

    options = RegistrationOptions(transform="deformable")
    assert options.affine_model == "affine" and RegistrationOptions().affine_model == "affine"
    assert RegistrationOptions(transform="rigid").affine_model == "rigid"
    assert not options.select_model and RegistrationOptions().select_model  # the field's affine part
    with pytest.raises(InputError, match="deformable"):
        RegistrationOptions(transform="bspline")



def test_serial_sections_keep_the_affine_part_before_a_field():
    """H&E against Cc10 (../shared/data/he_ihc), bundled he-ihc model: the affine part of a
    deformable registration is the affine fit, within 1.1x the best affine map's mean TRE (10.8 px)
    on the 80 landmarks, without the model selection (which kept a similarity fit there, 11.6 px,
    before it weighed a looser model's gain against the details' own score)."""
    from napari_comir.core.teaching import read_teaching_pairs

    listing = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc" / "pairs.csv"
    if not listing.is_file():
        pytest.skip("../shared/data/he_ihc is not beside the checkout")
    pair = next(pair for pair in read_teaching_pairs(listing) if pair.name.endswith("Cc10"))
    result = api.register_multimodal(pair.fixed_image, pair.moving_image, "he-ihc",
                                     transform="deformable")
    affine = getattr(result.transform, "affine", result.transform)  # the field's affine part
    assert affine.model == "affine"
    assert pair.error(affine) <= 1.1 * pair.error(pair.transform)
    assert pair.error(result.transform) <= pair.error(affine) + 1.0  # the field never costs > 1 px


def test_serial_sections_land_below_the_best_affine_map_with_the_field():
    """Issue 24's target on the four H&E-vs-IHC pairs (bundled he-ihc): the field kept, its mean
    TRE over the 80 landmarks at least 0.2 px below that of the best affine map there is (fitted
    to the landmarks themselves) and below the affine part it started from. The B-spline field
    block matching replaced was refused on Cc10 and Ki67 (11.7 and 13.8 px against 10.8 and 12.9);
    block matching on the CoMIRs alone landed 0.1 px below the map there, with the images' tissue
    density beside them 0.3 and 0.5 px."""
    from napari_comir.core.teaching import read_teaching_pairs

    listing = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc" / "pairs.csv"
    if not listing.is_file():
        pytest.skip("../shared/data/he_ihc is not beside the checkout")
    for pair in read_teaching_pairs(listing):
        result = api.register_multimodal(pair.fixed_image, pair.moving_image, "he-ihc",
                                         transform="deformable")
        assert result.deformable["kept"], (pair.name, result.deformable["reasons"])
        assert result.deformable["image_detail"]  # two colour bright fields
        affine = result.transform.affine
        assert pair.error(result.transform) < min(pair.error(pair.transform) - 0.2, pair.error(affine)), (
            pair.name, pair.error(result.transform), pair.error(pair.transform))


def test_serial_sections_keep_the_looser_model_their_details_support():
    """The same pair registered affine (the default): the sections differ by an affine stretch,
    and the affine fit makes their weak details agree 29 % better than the similarity fit (1.34
    against 1.04). The selection keeps it: within 1.1x the best affine map, called likely. Before
    a gain was weighed against the details' own score it stepped down to the similarity fit
    (11.6 px, probably wrong), and before that to the rigid one (12.5 px)."""
    from napari_comir.core.teaching import read_teaching_pairs

    listing = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc" / "pairs.csv"
    if not listing.is_file():
        pytest.skip("../shared/data/he_ihc is not beside the checkout")
    pair = next(pair for pair in read_teaching_pairs(listing) if pair.name.endswith("Cc10"))
    result = api.register_multimodal(pair.fixed_image, pair.moving_image, "he-ihc")
    assert result.transform.model == "affine"
    assert pair.error(result.transform) <= 1.1 * pair.error(pair.transform)
    assert result.success_likely, result.reasons


def test_weak_details_refit_from_the_pixel_sizes_scale():
    """With details too weak to trust (a detail threshold no fit reaches), a fit free to scale
    settles where the search's coarse scales left it: H&E against Cc10 as inverted grey images,
    the affine registration's loose fit drifted to scale 1.095 (22.1 px mean TRE, the best affine
    map 10.8, its scale 1.02-1.03). The same model fitted again from a rigid fit at scale 1 (the
    scale the pixel sizes give) agrees better and is kept: within 1.5x the best affine map."""
    from napari_comir.core.registration import register
    from napari_comir.core.teaching import read_teaching_pairs

    listing = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc" / "pairs.csv"
    if not listing.is_file():
        pytest.skip("../shared/data/he_ihc is not beside the checkout")
    pair = next(pair for pair in read_teaching_pairs(listing) if pair.name.endswith("Cc10"))
    inverted_grey = [255 - image.astype(np.float32).mean(axis=2)
                     for image in (pair.fixed_image, pair.moving_image)]
    result = register(*inverted_grey, transform="affine", detail_threshold=100.0, border=8)
    assert pair.error(result.transform) <= 1.5 * pair.error(pair.transform)
    assert 0.97 <= np.sqrt(abs(np.linalg.det(result.transform.matrix_xy[:2, :2]))) <= 1.06
