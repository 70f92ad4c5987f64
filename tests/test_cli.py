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
