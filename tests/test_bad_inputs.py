"""Bad inputs through the Python API and the CLI: one clear error each, never a traceback.

Every row of the tables below is one input tried; accepted inputs (RGBA, uint16, float) must
register. CLI failures must exit with status 2, print exactly one line
``napari-comir <command>: error: ...`` to stderr and leave no partial output file.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile

from napari_comir import api
from napari_comir.cli import main
from napari_comir.core.errors import InputError, ModelFileError, RegistrationError
from napari_comir.core.io import write_tiff
from napari_comir.core.synthetic import synthetic_pair

BF, SHG = synthetic_pair((64, 64), seed=0)
WHITE = np.full((64, 64, 1), 255, np.uint8)


def _rgba(bf):
    return np.concatenate([bf, WHITE], axis=-1)


# id, (fixed, moving) from (shg, bf), keyword arguments, expected error (None: accepted), match
# [, marks]
API_CASES = [
    ("1-D", lambda s, b: (np.zeros(100), b), {}, InputError, "not a 2-D image"),
    ("4-D", lambda s, b: (s[None, None], b), {}, InputError, "not a 2-D image"),
    ("3-D stack planes first", lambda s, b: (np.stack([s] * 5), b), {}, InputError,
     "3-D stacks"),
    ("3-D stack planes last", lambda s, b: (np.stack([s] * 5, -1), b), {}, InputError,
     "3-D stacks"),
    ("RGB stack", lambda s, b: (s, np.stack([b] * 5)), {}, InputError,
     "moving image .for bf-shg's 'bf' network.: shape"),
    ("RGBA moving", lambda s, b: (s, _rgba(b)), {}, None, None),
    ("uint16", lambda s, b: (s.astype(np.uint16) * 257, b.astype(np.uint16) * 257), {}, None,
     None),
    ("float32/float64", lambda s, b: (s / np.float32(255), b.astype(np.float64)), {}, None, None),
    ("bool", lambda s, b: (s > 100, b), {}, InputError, "dtype bool is not supported"),
    ("complex", lambda s, b: (s.astype(complex), b), {}, InputError, "dtype complex128"),
    ("strings", lambda s, b: ("image.tif", b), {}, InputError, "dtype <U9"),
    ("NaN", lambda s, b: (np.where(s > 200, np.nan, s.astype(float)), b), {}, InputError,
     "NaN or infinite"),
    ("inf", lambda s, b: (s, np.where(b > 250, np.inf, b.astype(np.float32))), {}, InputError,
     "moving image .for bf-shg's 'bf' network. contains NaN or infinite"),
    ("constant fixed", lambda s, b: (np.full_like(s, 7), b), {}, RegistrationError,
     "fixed image is constant"),
    ("blank moving", lambda s, b: (s, np.zeros_like(b)), {}, RegistrationError,
     "moving image is constant"),
    ("empty", lambda s, b: (np.zeros((0, 0), np.uint8), b), {}, InputError, "is empty"),
    ("empty rows", lambda s, b: (s, b[:0]), {}, InputError,
     "moving image .for bf-shg's 'bf' network. is empty"),
    ("smaller than minimum", lambda s, b: (s[:63, :63], b), {}, InputError,
     "fixed image is too small to register: 63x63 px .need at least 64x64"),
    ("grey for an RGB network", lambda s, b: (s, s), {}, None, None),
    ("RGB for a grey network", lambda s, b: (b, b), {}, InputError,
     "fixed image .for bf-shg's 'shg' network. has 3 channel.* 1 are expected"),
    ("two channels", lambda s, b: (s, b[..., :2]), {}, InputError, "2 channel"),
    ("no overlap at any shift",
     lambda s, b: (np.tile(s, (1, 7)), np.tile(b, (7, 1, 1))),
     {"rotation_range": 0}, RegistrationError, "enough overlap"),
    ("unknown method", lambda s, b: (s, b), {"method": "magic"}, InputError, "method must be"),
    ("reversed rotation range", lambda s, b: (s, b), {"rotation_range": (10, -10)}, InputError,
     "rotation_range"),
    ("unknown modality", lambda s, b: (s, b), {"fixed_modality": "nir"}, InputError,
     "no modality 'nir'; it knows bf, shg"),
    ("unknown device", lambda s, b: (s, b), {"device": "tpu"}, InputError, "unknown device"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny untrained model and its card path (saved once for all CLI rows)."""
    tiny = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 3})
    return tiny, str(api.save_model(tiny, tmp_path_factory.mktemp("model") / "m"))


@pytest.mark.parametrize("make, kwargs, error, match", [
    pytest.param(*case[1:5], id=case[0], marks=case[5:]) for case in API_CASES])
def test_api(model, make, kwargs, error, match):
    fixed, moving = make(SHG, BF)
    if error is None:
        result = api.register_multimodal(fixed, moving, model[0], **kwargs)
        assert np.isfinite(result.score)
    else:
        with pytest.raises(error, match=match):
            api.register_multimodal(fixed, moving, model[0], **kwargs)


def test_api_files_and_models(tmp_path):
    (tmp_path / "truncated.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\x01")
    with pytest.raises(InputError, match="no such image file"):
        api.read_image(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="truncated.tif: cannot read the image"):
        api.read_image(tmp_path / "truncated.tif")
    with pytest.raises(ModelFileError, match="unknown model 'no-such-model'"):
        api.load_model("no-such-model")


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    """Input files of every CLI row, by placeholder name."""
    folder = tmp_path_factory.mktemp("inputs")
    arrays = {"shg": SHG, "bf": BF, "rgba": _rgba(BF), "u16": SHG.astype(np.uint16) * 257,
              "stack": np.stack([SHG] * 5), "bool": SHG > 100, "const": np.full_like(SHG, 9),
              "nan": np.where(SHG > 200, np.nan, SHG.astype(np.float32)), "small": SHG[:10, :10]}
    paths = {"model": model[1], "missing": str(folder / "missing.tif")}
    for name, array in arrays.items():
        paths[name] = str(folder / f"{name}.tif")
        tifffile.imwrite(paths[name], array)
    write_tiff(folder / "bf.tif", BF)
    data = (folder / "bf.tif").read_bytes()
    corrupt = {"truncated": data[: len(data) // 2], "zero_bytes": b"",
               "garbage": b"II*\x00" + b"garbage" * 20, "text": b"not an image"}
    for name, content in corrupt.items():
        paths[name] = str(folder / f"{name}.tif")
        (folder / f"{name}.tif").write_bytes(content)
    paths["png_named_tif"] = str(folder / "fake.png")
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "a_file").write_text("x")
    paths["pairs"] = str(folder / "pairs.csv")
    (folder / "pairs.csv").write_text("name,shg_file,bf_file\np,shg.tif,bf.tif\n")
    paths["a_file"] = str(folder / "a_file")
    (folder / "short.csv").write_text("name,shg_file,bf_file\np,shg.tif,bf.tif\nq,shg.tif\n")
    paths["short_csv"] = str(folder / "short.csv")
    (folder / "latin.csv").write_bytes("name,shg_file,bf_file\nétude,shg.tif,bf.tif\n".encode("latin-1"))
    paths["latin_csv"] = str(folder / "latin.csv")
    return paths


def _register(fixed, moving, *extra, out="{out}/r.json"):
    return ["register", "--fixed", f"{{{fixed}}}", "--moving", f"{{{moving}}}",
            "--model", "{model}", "--out", out, *extra]


def _infer(image, modality, *extra, out="{out}/c.tif"):
    return ["infer", f"{{{image}}}", "--model", "{model}", "--modality", modality, "--out", out,
            *extra]


# id, argv ({name} = a file of the `files` fixture, {out} = a fresh output folder),
# expected message (None: success), marks
CLI_CASES = [
    ("ok", _register("shg", "bf"), None, ()),
    ("RGBA accepted", _register("shg", "rgba"), None, ()),
    ("uint16 accepted", _register("u16", "bf"), None, ()),
    ("missing file", _register("missing", "bf"), "no such image file", ()),
    ("truncated TIFF", _register("shg", "truncated"), "truncated.tif: cannot read the image", ()),
    ("zero-byte TIFF", _register("zero_bytes", "bf"), "zero_bytes.tif: cannot read", ()),
    ("text as TIFF", _register("text", "bf"), "text.tif: cannot read", ()),
    ("corrupt PNG", _register("shg", "png_named_tif"), "fake.png: cannot read", ()),
    ("garbage TIFF", _register("garbage", "bf"), "garbage.tif:", ()),
    ("not an image type", _register("model", "bf"), "unsupported file type .json", ()),
    ("3-D stack", _register("stack", "bf"), "multi-page stacks and 3-D volumes", ()),
    ("bool", _register("bool", "bf"), "dtype bool is not supported", ()),
    ("NaN", _register("nan", "bf"), "NaN or infinite", ()),
    ("constant", _register("const", "bf"), "is constant", ()),
    ("too small", _register("small", "bf"), "too small: 10x10 px", ()),
    ("channels swapped", _register("bf", "shg"), "has 3 channel(s) but 1 are expected", ()),
    ("unknown model", ["register", "--fixed", "{shg}", "--moving", "{bf}", "--model", "nope",
                       "--out", "{out}/r.json"], "unknown model 'nope'", ()),
    ("bad rotation range", _register("shg", "bf", "--rotation-range", "nan"), "rotation_range",
     ()),
    ("unknown device", _register("shg", "bf", "--device", "tpu"), "unknown device 'tpu'", ()),
    ("output folder missing", _register("shg", "bf", out="{out}/no/r.json"),
     "output folder does not exist", ()),
    ("output folder is a file", _register("shg", "bf", out="{a_file}/r.json"), "a_file", ()),
    ("output is a folder", _register("shg", "bf", out="{out}"), "is a folder", ()),
    ("resampled output unwritable", _register("shg", "bf", "--resampled", "{out}/no/x.tif"),
     "output folder does not exist", ()),
    ("--out is the fixed image", _register("shg", "bf", out="{shg}"),
     "is the input --fixed: it would be overwritten", ()),
    ("--resampled is the moving image", _register("shg", "bf", "--resampled", "{bf}"),
     "is the input --moving", ()),
    ("--out is --resampled", _register("shg", "bf", "--resampled", "{out}/r.json"),
     "--out and --resampled are the same file", ()),
    ("infer ok", _infer("bf", "bf"), None, ()),
    ("infer --out is its input", _infer("bf", "bf", out="{bf}"), "is the input image", ()),
    ("train lr 0", ["train", "--fixed", "{shg}", "--moving", "{bf}", "--lr", "0", "--out",
                    "{out}/m"], "--lr must be positive", ()),
    ("train depth 0", ["train", "--fixed", "{shg}", "--moving", "{bf}", "--depth", "0", "--out",
                       "{out}/m"], "--depth must be between 1 and 6", ()),
    ("train 9 CoMIR channels", ["train", "--fixed", "{shg}", "--moving", "{bf}",
                                "--comir-channels", "9", "--out", "{out}/m"],
     "--comir-channels must be between 1 and 3", ()),
    ("train checkpoint every 0", ["train", "--fixed", "{shg}", "--moving", "{bf}",
                                  "--checkpoint-every", "0", "--out", "{out}/m"],
     "--checkpoint-every must be between 1", ()),
    ("train checkpoint over its input", ["train", "--fixed", "{shg}", "--moving", "{bf}", "--out",
                                         "{out}/m", "--checkpoint", "{shg}"],
     "--checkpoint", ()),
    ("train bad --save-as name", ["train", "--fixed", "{shg}", "--moving", "{bf}", "--save-as",
                                  "../escape"], "invalid model name '../escape'", ()),
    ("train checkpoint folder missing", ["train", "--fixed", "{shg}", "--moving", "{bf}",
                                         "--out", "{out}/m", "--checkpoint", "{out}/no/c.pt"],
     "output folder does not exist", ()),
    ("train short CSV row", ["train", "--pairs", "{short_csv}", "--out", "{out}/m"],
     "line 3: 2 values for 3 columns", ()),
    ("train non-UTF-8 CSV", ["train", "--pairs", "{latin_csv}", "--out", "{out}/m"],
     "not a readable UTF-8 CSV", ()),
    ("batch negative workers", ["batch", "{pairs}", "--model", "{model}", "--out", "{out}/b",
                                "--workers", "-1"], "n_workers must be a whole number", ()),
    ("infer unknown modality", _infer("bf", "nir"), "no modality 'nir'", ()),
    ("infer output folder missing", _infer("bf", "bf", out="{out}/no/c.tif"),
     "output folder does not exist", ()),
    ("batch missing CSV", ["batch", "{missing}", "--model", "{model}", "--out", "{out}/b"],
     "no such pairs file", ()),
    ("batch output under a file", ["batch", "{pairs}", "--model", "{model}", "--out",
                                   "{a_file}/b"], "cannot create the output folder", ()),
    ("batch CSV not a CSV", ["batch", "{shg}", "--model", "{model}", "--out", "{out}/b"],
     "shg.tif: not a readable CSV", ()),
    ("batch unknown model", ["batch", "{pairs}", "--model", "nope", "--out", "{out}/b"],
     "unknown model 'nope'", ()),
]


@pytest.mark.parametrize("argv, message", [pytest.param(*case[1:3], id=case[0], marks=case[3])
                                           for case in CLI_CASES])
def test_cli(files, tmp_path, capsys, caplog, argv, message):
    out = tmp_path / "out"
    out.mkdir()
    status = main([arg.format(out=out, **files) for arg in argv])
    stderr = capsys.readouterr().err
    leftovers = sorted(p.name for p in out.rglob("*") if message is not None or ".tmp" in p.name)
    if message is None:
        assert status == 0, stderr
        assert not leftovers
        return
    command = argv[0]
    assert status == 2
    assert "Traceback" not in stderr
    # pytest captures library log records, which would otherwise also reach stderr
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert stderr.startswith(f"napari-comir {command}: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert not leftovers, f"partial output left: {leftovers}"


def test_thin_images_are_refused_quickly_with_the_reason():
    """A 64 x 4096 strip used to take 9.9 GiB and 40 s; it is refused before any work."""
    import time

    from napari_comir.core.registration import register

    strip = np.random.default_rng(0).random((64, 4096))
    started = time.perf_counter()
    with pytest.raises(InputError, match="too thin to register: 64 x 4096 px"):
        register(strip, strip[:, :512])
    assert time.perf_counter() - started < 1.0
    register(strip[:, :512], strip[:, :512], transform="rigid", rotation_range=5)  # 8:1 is fine


@pytest.mark.parametrize(("field", "value", "message"), [
    ("architecture", {"type": "unet", "base_channels": 1024, "depth": 6}, "base_channels must be"),
    ("architecture", {"type": "unet", "base_channels": 8, "depth": 0}, "depth must be"),
    ("architecture", ["unet", 8, 4], "architecture must be an object"),
    ("architecture", {"type": "resnet"}, "unknown architecture"),
    ("comir_channels", "1", "comir_channels must be a whole number"),
    ("comir_channels", 1.0, "comir_channels must be a whole number"),
    ("score_threshold", -5, "score_threshold must be a number in"),
    ("score_threshold", "0.5", "score_threshold must be a number in"),
])
def test_crafted_cards_are_refused(tmp_path, model, field, value, message):
    """A card cannot ask for more memory than the stated bounds, nor a threshold outside its range."""
    card = json.loads(open(model[1]).read())
    card[field] = value
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps(card))
    import shutil

    shutil.copy(model[1].replace(".json", ".safetensors"), tmp_path / "crafted.safetensors")
    with pytest.raises(ModelFileError, match=message):
        api.load_model(str(path))


# id, argv ({in} = a folder holding shg.tif, bf.tif, the model m.json + m.safetensors, a zarr
# folder z.ome.zarr holding bf.tif and a .zattrs, a FIFO, and b/pairs.csv listing
# b/resampled/p.tif), expected message. Each case lost data before (issue 21).
READ_INPUT_CASES = [
    ("register --out the model card",
     ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--model", "{in}/m.json",
      "--out", "{in}/m.json"], "is the input --model card"),
    ("register --export-itk the weights",
     ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--model", "{in}/m.json",
      "--out", "{in}/r.json", "--export-itk", "{in}/m.safetensors"], "is the input --model weights"),
    ("infer --out the weights",
     ["infer", "{in}/bf.tif", "--model", "{in}/m.json", "--modality", "bf", "--out",
      "{in}/m.safetensors"], "is the input --model weights"),
    ("train --from, --checkpoint its weights",
     ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--from", "{in}/m.json",
      "--checkpoint", "{in}/m.safetensors", "--out", "{in}/n"], "is the input --from weights"),
    ("train --out the --from model",
     ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--from", "{in}/m.json",
      "--out", "{in}/m"], "is the input --from"),
    ("train --out the --resume checkpoint",
     ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--resume",
      "{in}/m.safetensors", "--out", "{in}/m"], "is the input --resume"),
    ("register --resampled a zarr holding the moving image",
     ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/z.ome.zarr/bf.tif", "--model",
      "{in}/m.json", "--out", "{in}/r.json", "--resampled", "{in}/z.ome.zarr"],
     "contains the input --moving"),
    ("register --resampled a zarr of the user's",
     ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--model", "{in}/m.json",
      "--out", "{in}/r.json", "--resampled", "{in}/z.ome.zarr"],
     "not an earlier OME-Zarr output of napari-comir"),
    ("apply --out a zarr holding the image",
     ["apply", "--transform", "{in}/t.json", "--image", "{in}/z.ome.zarr/bf.tif", "--like",
      "{in}/shg.tif", "--out", "{in}/z.ome.zarr"], "contains the input --image"),
    ("register --out inside an input zarr",
     ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/z.ome.zarr", "--model",
      "{in}/m.json", "--out", "{in}/z.ome.zarr/.zattrs"], "lies inside the input --moving"),
    ("register --out a FIFO", ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif",
                               "--model", "{in}/m.json", "--out", "{in}/fifo"],
     "is not a regular file"),
    ("batch --out holding a listed image",
     ["batch", "{in}/b/pairs.csv", "--model", "{in}/m.json", "--out", "{in}/b", "--resampled"],
     "--out resampled/ {in}/b/resampled contains the input pair 'p' moving"),
    ("train --save-as a bundled name",
     ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--save-as", "bf-shg"],
     "is a bundled model's"),
    ("train --save-as into a models folder that is a file",
     ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--save-as", "mine"],
     "cannot be made: {in}/models-file is a file"),
]


def _tree_digest(folder) -> dict:
    import hashlib
    import stat

    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                          if p.is_file() else stat.S_IFMT(p.lstat().st_mode))
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("argv, message", [pytest.param(*case[1:], id=case[0])
                                           for case in READ_INPUT_CASES])
def test_outputs_never_touch_what_a_command_reads(tmp_path, model, capsys, monkeypatch, argv,
                                                  message):
    """Every file or folder a command reads is an input: refused as an output, or as a folder
    holding one, before any work, in one line, and left byte-identical."""
    import os
    import shutil

    folder = tmp_path / "in"
    (folder / "z.ome.zarr").mkdir(parents=True)
    for name in ("m.json", "m.safetensors"):
        shutil.copy(model[1].replace("m.json", name), folder / name)
    write_tiff(folder / "shg.tif", SHG)
    for path in (folder / "bf.tif", folder / "z.ome.zarr" / "bf.tif"):
        write_tiff(path, BF)
    (folder / "z.ome.zarr" / ".zattrs").write_text('{"multiscales": []}')
    (folder / "t.json").write_text(json.dumps({"model": "rigid", "matrix_xy": [[1, 0, 2], [0, 1, 3]]}))
    os.mkfifo(folder / "fifo")
    (folder / "b" / "resampled").mkdir(parents=True)
    write_tiff(folder / "b" / "resampled" / "p.tif", BF)
    write_tiff(folder / "b" / "shg.tif", SHG)
    (folder / "b" / "pairs.csv").write_text("name,shg_file,bf_file\np,shg.tif,resampled/p.tif\n")
    (folder / "models-file").write_text("not a folder")
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(folder / "models-file" / "models"))
    before = _tree_digest(folder)
    status = main([arg.format(**{"in": folder}) for arg in argv])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert stderr.startswith(f"napari-comir {argv[0]}: error: ") and stderr.count("\n") == 1, stderr
    assert message.format(**{"in": folder}) in stderr
    assert _tree_digest(folder) == before


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB file system, filled up (needs root to mount; skipped otherwise)."""
    import os
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here")
    try:
        with open(mount / "filler", "wb") as handle, pytest.raises(OSError):
            handle.write(b"x" * (4 << 20))
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)  # even if a file is open


FULL_DISK_CASES = [
    ("register --out", ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif",
                        "--model", "{model}", "--out", "{full}/r.json"]),
    ("register --resampled .ome.tif", ["register", "--fixed", "{in}/shg.tif", "--moving",
                                       "{in}/bf.tif", "--model", "{model}", "--out", "{in}/r.json",
                                       "--resampled", "{full}/x.ome.tif"]),
    ("register --resampled .ome.zarr", ["register", "--fixed", "{in}/shg.tif", "--moving",
                                        "{in}/bf.tif", "--model", "{model}", "--out",
                                        "{in}/r.json", "--resampled", "{full}/x.ome.zarr"]),
    ("register --export-itk", ["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif",
                               "--model", "{model}", "--out", "{in}/r.json", "--export-itk",
                               "{full}/x.tfm"]),
    ("infer --out", ["infer", "{in}/bf.tif", "--model", "{model}", "--modality", "bf", "--out",
                     "{full}/c.tif"]),
    ("train --out", ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif", "--steps", "1",
                     "--batch-size", "2", "--patch-size", "32", "--base-channels", "2", "--depth",
                     "1", "--out", "{full}/m"]),
    ("train --checkpoint", ["train", "--fixed", "{in}/shg.tif", "--moving", "{in}/bf.tif",
                            "--steps", "1", "--batch-size", "2", "--patch-size", "32",
                            "--base-channels", "2", "--depth", "1", "--checkpoint-every", "1",
                            "--checkpoint", "{full}/c.pt", "--out", "{in}/m"]),
    ("apply --geojson --out", ["apply", "--transform", "{in}/t.json", "--geojson", "{in}/a.geojson",
                               "--out", "{full}/a.geojson"]),
]


@pytest.mark.parametrize("argv", [pytest.param(case[1], id=case[0]) for case in FULL_DISK_CASES])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, model, full_disk, capsys, argv):
    """A full disk gave tracebacks on 35 of 37 write paths (OSError 28, SafetensorError, torch's
    own errors): now one line, exit 2, and no temporary data left on the full disk."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_tiff(folder / "shg.tif", SHG)
    write_tiff(folder / "bf.tif", BF)
    (folder / "t.json").write_text(json.dumps({"model": "rigid", "matrix_xy": [[1, 0, 2], [0, 1, 3]]}))
    (folder / "a.geojson").write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    status = main([arg.format(**{"in": folder, "full": full_disk, "model": model[1]}) for arg in argv])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert "Traceback" not in stderr
    # the progress bar's lines (the disk filled up after the work), then one line
    lines = stderr.split("\n")
    assert lines[-1] == "" and lines[-2].startswith(f"napari-comir {argv[0]}: error: ") \
        and "\n".join(lines[:-2]).count("error") == 0, stderr
    assert "the disk is full" in lines[-2] or "are free" in lines[-2], stderr
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def _tiny_pair():
    from napari_comir.core.data import AlignedPair

    return AlignedPair({"shg": SHG, "bf": BF}, name="p")


def _fine_tune(model, pairs=None, **config):
    from napari_comir.core.training import TrainConfig

    settings = {"steps": 1, "batch_size": 2, "patch_size": 32, **config}
    return list(api.fine_tune(model, [_tiny_pair()] if pairs is None else pairs,
                              TrainConfig(**settings)))


def _geojson(tmp_path, text):
    path = tmp_path / "a.geojson"
    path.write_text(text, encoding="utf-8")
    return api.apply_transform_to_geojson(_transform_file(tmp_path, '{"matrix_xy": [[1, 0, 2], [0, 1, 3]]}'),
                                          path, tmp_path / "out.geojson")


def _transform_file(tmp_path, text, name="t.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


# id, call(model, tmp_path), expected message: each gave a traceback (issue 21)
API_BOUNDARY_CASES = [
    ("model a Path that is no model", lambda m, t: api.register_multimodal(SHG, BF, t / "no.json"),
     "no model card no.json"),
    ("model None", lambda m, t: api.register_multimodal(SHG, BF, None),
     "model must be a model name, a model file path or a ComirModel, got NoneType"),
    ("new_model without bounds", lambda m, t: api.new_model(
        "bf-shg", architecture={"type": "unet", "base_channels": 4096, "depth": 12}),
     "base_channels must be a whole number from 1 to 64"),
    ("new_model unknown field", lambda m, t: api.new_model("bf-shg", colour=1), "new_model:"),
    ("lr 1e300", lambda m, t: _fine_tune(m, lr=1e300), "lr must be a number of at most 10"),
    ("checkpoint_every 0", lambda m, t: _fine_tune(m, checkpoint_every=0), "checkpoint_every must be"),
    ("batch_size text", lambda m, t: _fine_tune(m, batch_size="x"), "batch_size must be a whole number"),
    ("config a dict", lambda m, t: list(api.fine_tune(m, [_tiny_pair()], {"steps": 1})),
     "config must be a TrainConfig, got dict"),
    ("pairs of arrays", lambda m, t: _fine_tune(m, pairs=[SHG]), "pairs must be a list of AlignedPair"),
    ("read_pairs_csv None", lambda m, t: api.read_pairs_csv(None, m.modalities),
     "the pairs CSV must be a file path, got None"),
    ("save_model None", lambda m, t: api.save_model(m, None), "a model path must be a file path"),
    ("fit_landmarks text", lambda m, t: api.fit_landmarks("ab", "cd"), "landmarks must be (x, y) numbers"),
    ("pixel size 1e30", lambda m, t: api.register_multimodal(SHG, BF, m, fixed_pixel_size=1e30,
                                                             moving_pixel_size=1),
     "µm per pixel from 1e-07 to 1e+06"),
    ("resample to 200 000²", lambda m, t: api.resample(BF, api.AffineTransform.rigid(), (200_000, 200_000)),
     "onto a 200000 x 200000 px grid would take"),
    ("transform nested deep", lambda m, t: api.apply_transform_to_points(
        _transform_file(t, '{"matrix_xy": ' + "[" * 100_000 + "]" * 100_000 + "}"), [[1, 2]]),
     "transform JSON is malformed"),
    ("transform of 10^400", lambda m, t: api.apply_transform_to_points(
        _transform_file(t, '{"matrix_xy": [[1, 0, ' + "9" * 400 + "], [0, 1, 0]]}"), [[1, 2]]),
     "must be finite numbers"),
    ("angle as text", lambda m, t: api.apply_transform_to_points(
        _transform_file(t, '{"angle_deg": "ten", "translation_xy": [1, 2]}'), [[1, 2]]),
     "angle_deg must be a number"),
    ("angle as a list", lambda m, t: api.apply_transform_to_points(
        _transform_file(t, '{"angle_deg": [1, 2], "translation_xy": [1, 2]}'), [[1, 2]]),
     "angle_deg must be a number"),
    ("CSV field over 128 KiB", lambda m, t: api.apply_transform_to_points(
        _transform_file(t, "m00,m01\n" + "1" * 200_000 + ",1\n", "t.csv"), [[1, 2]]),
     "transform CSV is malformed"),
    ("GeoJSON 5000-digit number", lambda m, t: _geojson(
        t, '{"type": "Point", "coordinates": [' + "1" * 5000 + ", 2]}"), "not JSON that can be read"),
    ("GeoJSON type a list", lambda m, t: _geojson(
        t, '{"type": "Feature", "geometry": {"type": ["Point"], "coordinates": [1, 2]}}'),
     "'(list)' is not a GeoJSON geometry type"),
    ("int64 into an OME-TIFF", lambda m, t: apply_transform_to_image_file(
        api.AffineTransform.rigid(), _int64_tiff(t), _int64_tiff(t), t / "o.ome.tif"),
     "OME-TIFF cannot hold int64 pixels"),
]


def apply_transform_to_image_file(*args, **kwargs):
    from napari_comir.core.apply import apply_transform_to_image_file as carry

    return carry(*args, **kwargs)


def _int64_tiff(folder):
    tifffile.imwrite(folder / "labels.tif", np.arange(64 * 64, dtype=np.int64).reshape(64, 64))
    return folder / "labels.tif"


@pytest.mark.parametrize("call, message", [pytest.param(*case[1:], id=case[0])
                                           for case in API_BOUNDARY_CASES])
def test_public_api_checks_its_arguments_at_the_boundary(model, tmp_path, call, message):
    """Wrong types and values given to the public API raise a ComirError subclass saying what
    is wrong, never a TypeError, AttributeError, OverflowError or RecursionError from inside."""
    from napari_comir.core.errors import ComirError

    with pytest.raises(ComirError) as caught:
        call(model[0], tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_lone_surrogate_in_geojson_properties_is_kept(tmp_path):
    """Valid JSON that is not UTF-8 (a lone surrogate escape) gave a UnicodeEncodeError; it is
    written back as the same escape."""
    _geojson(tmp_path, '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, '
             '"properties": {"name": "\\ud800"}}')
    written = json.loads((tmp_path / "out.geojson").read_text())
    assert written["properties"]["name"] == "\ud800"
    assert written["geometry"]["coordinates"] == [3.0, 5.0]


@pytest.mark.slow  # ~30 s: two pyramidal slides written
def test_damaged_tiles_of_a_whole_slide_are_one_line(tmp_path, capsys):
    """Tiles are decoded only when the registration reads them: a damaged or over-long deflate
    tile (imagecodecs' DeflateError) gave a traceback mid-run; now one line, exit 2."""
    from napari_comir.core.tiled_resample import resample_to_file
    from napari_comir.core.transforms import AffineTransform

    bf, shg = synthetic_pair((1536, 1536), seed=0)
    for name, image in (("shg", shg), ("bf", bf)):  # pyramidal: read lazily, tile by tile
        list(resample_to_file(image, AffineTransform.rigid(), image.shape[:2], tmp_path / f"{name}.ome.tif"))
    data = bytearray((tmp_path / "shg.ome.tif").read_bytes())
    data[len(data) // 4:len(data) // 2] = b"\xff" * (len(data) // 2 - len(data) // 4)
    (tmp_path / "damaged.ome.tif").write_bytes(bytes(data))
    status = main(["register", "--fixed", str(tmp_path / "damaged.ome.tif"), "--moving",
                   str(tmp_path / "bf.ome.tif"), "--out", str(tmp_path / "r.json")])
    lines = capsys.readouterr().err.split("\n")
    assert status == 2 and "Traceback" not in "\n".join(lines)
    assert lines[-2].startswith("napari-comir register: error: damaged.ome.tif: cannot read the "
                                "image's tiles"), lines[-2]
    assert not (tmp_path / "r.json").exists()
