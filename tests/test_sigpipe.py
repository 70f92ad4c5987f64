"""A closed output pipe (`napari-comir … | head -c 1`) ends every command promptly: status 141
(128 + SIGPIPE) as shell tools end, no traceback, and what it writes either complete or absent.

Each command runs in a subprocess whose stdout (or stdout and stderr together, as with
``2>&1 | head``) is closed before it prints anything (train: after its first 10 bytes).
`batch` is covered in test_batch.py (``test_a_closed_output_pipe_ends_the_batch_promptly``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_comir import api

TRAIN = ["--steps", "20", "--batch-size", "2", "--patch-size", "32", "--base-channels", "2",
         "--depth", "1", "--out", "{tmp}/trained"]
COMMANDS = {
    "models": ["models"],
    "register": ["register", "--fixed", "{tmp}/fixed.tif", "--moving", "{tmp}/moving.tif",
                 "--model", "{model}", "--out", "{tmp}/result.json", "--resampled", "{tmp}/on.tif"],
    "infer": ["infer", "{tmp}/moving.tif", "--model", "{model}", "--modality", "bf",
              "--out", "{tmp}/comir.tif"],
    "train": ["train", "--fixed", "{tmp}/fixed.tif", "--moving", "{tmp}/moving.tif", *TRAIN],
    "demo": ["demo", "--headless", "--model", "{model}"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "fixed.tif", (rng.random((96, 96)) * 255).astype(np.uint8))
    tifffile.imwrite(folder / "moving.tif", (rng.random((96, 96, 3)) * 255).astype(np.uint8),
                     photometric="rgb")
    tiny = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 2})
    return folder, str(api.save_model(tiny, folder / "tiny"))


def _outputs(folder):
    return {p.name for p in folder.iterdir()} - {"fixed.tif", "moving.tif", "tiny.json",
                                                  "tiny.safetensors"}


@pytest.mark.parametrize(("command", "merged", "read"), [
    *((command, False, 0) for command in COMMANDS),  # `napari-comir … | head -c 0`
    ("register", True, 0),  # `napari-comir … 2>&1 | head -c 0`
    ("train", True, 10),  # `napari-comir train … 2>&1 | head -c 10`: gone while the bar draws
])
def test_a_closed_pipe_ends_the_command_promptly(inputs, command, merged, read):
    folder, model = inputs
    for name in _outputs(folder):
        (folder / name).unlink()
    argv = [a.format(tmp=folder, model=model) for a in COMMANDS[command]]
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "napari_comir", *argv], cwd=folder,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    assert len(process.stdout.read(read)) == read
    process.stdout.close()  # the reader is gone, like `head` once it has its bytes
    stderr = b"" if merged else process.stderr.read()
    status = process.wait(timeout=120)
    assert time.perf_counter() - started < 60
    assert status == 141, (status, stderr[-2000:])  # a traceback would be 1, a flush error 120
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr, stderr[-2000:]
    written = _outputs(folder)
    assert not [name for name in written if ".tmp" in name], written  # nothing half-written
    if "result.json" in written:
        assert "matrix_xy" in json.loads((folder / "result.json").read_text())
    if "comir.tif" in written:
        assert tifffile.imread(folder / "comir.tif").shape == (96, 96)
    if written & {"trained.json", "trained.safetensors"}:
        api.load_model(str(folder / "trained.json"), "cpu")  # a whole pair, or nothing
