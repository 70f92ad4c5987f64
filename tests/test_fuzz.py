"""Property-based fuzzing of the CLI contract: whatever images and options are drawn, `register`
exits 0 with a result, or 2 with exactly one line — never a traceback, never a changed input.

A small share runs in CI (``max_examples`` below); raise it locally for a longer run.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_comir import api
from napari_comir.cli import main

shapes = st.tuples(st.integers(1, 200), st.integers(1, 200))
dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.int16])
options = st.fixed_dictionaries({}, optional={
    "--transform": st.sampled_from(["rigid", "similarity", "affine", "projective", ""]),
    "--rotation-range": st.sampled_from(["0", "30", "180", "-5", "nan", "1e9"]),
    "--scale-range": st.sampled_from([("0.9", "1.1"), ("0.2", "1"), ("1.2", "1.1"), ("0.5", "2")]),
    "--fixed-pixel-size": st.sampled_from(["0.5", "0", "-1", "nan", "abc"]),
    "--moving-pixel-size": st.sampled_from(["0.5", "0.6", "0", "inf"]),
    "--method": st.sampled_from(["search", "sift", "magic"]),
})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    tiny = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 2})
    return str(api.save_model(tiny, tmp_path_factory.mktemp("fuzz-model") / "m"))


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fixed_shape=shapes, moving_shape=shapes, fixed_type=dtypes, moving_type=dtypes,
       moving_rgb=st.booleans(), chosen=options, seed=st.integers(0, 2**16))
def test_register_exits_0_or_2_with_one_line(tmp_path, capsys, model_file, fixed_shape,
                                             moving_shape, fixed_type, moving_type, moving_rgb,
                                             chosen, seed):
    rng = np.random.default_rng(seed)
    fixed = (rng.random(fixed_shape) * 200).astype(fixed_type)
    moving = (rng.random(moving_shape + ((3,) if moving_rgb else ())) * 200).astype(moving_type)
    tifffile.imwrite(tmp_path / "fixed.tif", fixed)
    tifffile.imwrite(tmp_path / "moving.tif", moving, photometric="rgb" if moving_rgb else None)
    before = {name: _digest(tmp_path / name) for name in ("fixed.tif", "moving.tif")}
    argv = ["register", "--fixed", str(tmp_path / "fixed.tif"), "--moving",
            str(tmp_path / "moving.tif"), "--model", model_file, "--out", str(tmp_path / "r.json")]
    for flag, value in chosen.items():
        argv += [flag, *value] if isinstance(value, tuple) else [flag, value]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals (a non-number for a number, a bad choice)
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status in (0, 2), (status, err)
    if status == 0:
        assert (tmp_path / "r.json").is_file()
    elif err.startswith("napari-comir register: error:"):
        assert err.count("\n") == 1, err
    assert {name: _digest(tmp_path / name) for name in before} == before
