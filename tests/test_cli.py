"""The CLI contract the benchmarks and users rely on."""

import json

import numpy as np
import tifffile

from napari_comir.cli import main
from napari_comir.core.evaluation import make_rigid_case
from napari_comir.core.transforms import AffineTransform, corner_error


def test_register_writes_the_documented_json(real_pair, tmp_path, capsys):
    bf, shg = real_pair
    fixed, moving, truth = make_rigid_case(shg, bf, 64.0, (-11.0, 6.0), 300)
    tifffile.imwrite(tmp_path / "shg.tif", fixed.astype(np.uint8))
    tifffile.imwrite(tmp_path / "bf.tif", np.clip(moving, 0, 255).astype(np.uint8))
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--out", str(tmp_path / "r.json"), "--resampled", str(tmp_path / "bf_on_shg.tif"),
                 "--c4-average"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"matrix_xy", "matrix_rc", "angle_deg", "translation_xy", "score", "seconds", "model",
            "model_version"} <= set(report)
    assert report["c4_average"] is True  # asked for, although bf-shg's card says no
    found = AffineTransform.from_matrix_xy(np.array(report["matrix_xy"]))
    assert corner_error(truth, found, moving.shape[:2]) < 1.5
    assert tifffile.imread(tmp_path / "bf_on_shg.tif").shape == (300, 300, 3)
    assert "score" in capsys.readouterr().out


def test_infer_and_models(real_pair, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "shg.tif", real_pair[1])
    assert main(["infer", str(tmp_path / "shg.tif"), "--modality", "shg", "--out",
                 str(tmp_path / "c.tif")]) == 0
    assert tifffile.imread(tmp_path / "c.tif").shape == (512, 512)
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "bf-shg" in listed and "rgb-nir" in listed


def test_register_can_switch_off_a_cards_c4_averaging(tmp_path):
    """rgb-nir's card averages quarter turns; --no-c4-average overrides it for one run."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "nir.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    for flag, expected in (([], True), (["--no-c4-average"], False)):
        assert main(["register", "--fixed", str(tmp_path / "nir.tif"), "--moving", str(tmp_path / "rgb.tif"),
                     "--model", "rgb-nir", "--out", str(tmp_path / "r.json"), *flag]) == 0
        assert json.loads((tmp_path / "r.json").read_text())["c4_average"] is expected


def test_train_options_reach_the_loss_and_the_card(tmp_path, monkeypatch):
    from napari_comir import api
    from napari_comir.core.io import write_tiff
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((64, 64), seed=0)
    write_tiff(tmp_path / "shg.tif", shg)
    write_tiff(tmp_path / "bf.tif", bf)
    configs, fine_tune = [], api.fine_tune
    monkeypatch.setattr(api, "fine_tune", lambda model, pairs, config, **kw: (
        configs.append(config), fine_tune(model, pairs, config, **kw))[1])
    assert main(["train", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--base-channels", "4", "--depth", "3", "--steps", "2", "--patch-size", "32",
                 "--batch-size", "2", "--turned-negatives", "--activation-penalty", "1e-3",
                 "--out", str(tmp_path / "m")]) == 0
    assert configs[0].turned_negatives and configs[0].l1 == configs[0].l2 == 1e-3
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["training"]["turned_negatives"] is True
    assert card["training"]["activation_penalty"] == 1e-3


def test_a_model_fine_tuned_from_another_does_not_claim_its_checks(tmp_path):
    """``train --from bf-shg``: the card said "trained on the 16 train pairs ..." and showed
    bf-shg's held-out results as its own after two steps on one pair."""
    from napari_comir import api
    from napari_comir.core.io import write_tiff
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((64, 64), seed=0)
    write_tiff(tmp_path / "shg.tif", shg)
    write_tiff(tmp_path / "bf.tif", bf)
    parent = api.load_model("bf-shg").card
    assert "val_registration" in parent.metrics
    assert main(["train", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--from", "bf-shg", "--steps", "2", "--patch-size", "32", "--batch-size", "2",
                 "--out", str(tmp_path / "m")]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["description"].startswith("Fine-tuned from bf-shg on 1 pair(s), 2 steps; not checked")
    assert card["metrics"] == {"started_from_metrics": parent.metrics}
    assert card["training"]["started_from"] == "bf-shg" and card["training"]["steps"] == 2


def test_register_exports_transforms_other_tools_read(tmp_path):
    """--export-itk/--export-ngff/--export-csv/--export-qupath hold the JSON's transform, in the
    command's pixel sizes; SimpleITK reads the ITK file."""
    import pytest

    sitk = pytest.importorskip("SimpleITK")
    from napari_comir.core.io import write_tiff
    from napari_comir.core.io.transform_formats import read_transform
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((96, 96), seed=1)
    write_tiff(tmp_path / "shg.tif", shg)
    write_tiff(tmp_path / "bf.tif", bf)
    names = {"itk": "r.tfm", "ngff": "r.ngff.json", "csv": "r.csv", "qupath": "r.txt"}
    exports = [arg for key, name in names.items() for arg in (f"--export-{key}", str(tmp_path / name))]
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--out", str(tmp_path / "r.json"), "--fixed-pixel-size", "0.5",
                 "--moving-pixel-size", "0.5", "--transform", "rigid", *exports]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    found = AffineTransform.from_matrix_xy(np.array(report["matrix_xy"]))
    assert report["exports"]["itk"] == str(tmp_path / "r.tfm")
    itk = sitk.ReadTransform(str(tmp_path / "r.tfm"))
    fixed_xy = np.array([[0.0, 0.0], [40.0, 70.0], [95.0, 10.0]])
    moving_xy = np.array([itk.TransformPoint(tuple(p * 0.5)) for p in fixed_xy]) / 0.5
    assert np.abs(found.apply_xy(moving_xy) - fixed_xy).max() < 1e-6
    for key, name in names.items():
        assert np.allclose(read_transform(tmp_path / name, format=key).matrix_xy, found.matrix_xy)
    assert (tmp_path / "r.csv.README.txt").is_file()


def test_register_refuses_an_export_onto_an_input_before_any_work(tmp_path, capsys):
    for name in ("shg.tif", "bf.tif"):
        (tmp_path / name).write_bytes(b"not read: the command stops first")
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--out", str(tmp_path / "r.json"), "--export-itk", str(tmp_path / "bf.tif")]) == 2
    assert "--export-itk" in capsys.readouterr().err
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--out", str(tmp_path / "r.json"), "--export-ngff", str(tmp_path / "t"),
                 "--export-qupath", str(tmp_path / "t")]) == 2
    assert "--export-ngff and --export-qupath are the same file" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_register_progress_counts_each_stage_to_its_end(tmp_path, capsys):
    """Each stage's bar counts its own steps (the resampled tiles 4 of 4), not 0 of n anew."""
    from napari_comir.core.io import write_tiff
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((1100, 1100), seed=1)
    write_tiff(tmp_path / "bf.tif", bf)
    write_tiff(tmp_path / "shg.tif", shg)
    assert main(["register", "--fixed", str(tmp_path / "shg.tif"), "--moving", str(tmp_path / "bf.tif"),
                 "--out", str(tmp_path / "r.json"), "--resampled", str(tmp_path / "bf_on_shg.tif"),
                 "--transform", "rigid", "--rotation-range", "10"]) == 0
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("resample: 100%") and "4/4" in line for line in bars)


def test_apply_an_image_shows_its_progress(tmp_path, capsys):
    """`apply --image` runs the same Progress events as the API, with the same bars: the tiles
    counted to their end, then the written size."""
    from napari_comir.core.io import write_tiff

    rng = np.random.default_rng(0)
    write_tiff(tmp_path / "channel.tif", (rng.random((1500, 1400)) * 255).astype(np.uint8))
    write_tiff(tmp_path / "like.tif", np.zeros((1300, 1200), np.uint8))
    (tmp_path / "r.json").write_text(AffineTransform.rigid(3.0, (10.0, -5.0)).to_json())
    assert main(["apply", "--transform", str(tmp_path / "r.json"), "--image", str(tmp_path / "channel.tif"),
                 "--like", str(tmp_path / "like.tif"), "--out", str(tmp_path / "out.tif")]) == 0
    captured = capsys.readouterr()
    bars = captured.err.replace("\r", "\n").splitlines()
    assert any(line.startswith("resample: 100%") and "4/4" in line for line in bars)
    assert "image carried from the moving onto the fixed image (1300x1200)" in captured.out
    assert tifffile.imread(tmp_path / "out.tif").shape == (1300, 1200)
