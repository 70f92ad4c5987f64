"""Training survives SIGKILL: the checkpoint always loads and ``--resume`` finishes the run
with exactly the weights of an uninterrupted run.

A real ``napari-comir train`` subprocess is killed at a random moment after its first
checkpoint (possibly while it writes one). Both runs start from the same saved initial model
(``--from``) with one CPU thread, so training is bit-for-bit reproducible.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from napari_comir import api
from napari_comir.core.io import write_tiff
from napari_comir.core.synthetic import synthetic_pair
from napari_comir.core.training import load_checkpoint

STEPS = 60
EVERY = 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny aligned pair and a saved untrained model to start every run from."""
    folder = tmp_path_factory.mktemp("train")
    bf, shg = synthetic_pair((128, 128), seed=0)
    write_tiff(folder / "shg.tif", shg)
    write_tiff(folder / "bf.tif", bf)
    init = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 3})
    api.save_model(init, folder / "init")
    return folder


def _train(inputs, folder, *extra) -> list[str]:
    return [sys.executable, "-m", "napari_comir.cli", "train", "--fixed", str(inputs / "shg.tif"),
            "--moving", str(inputs / "bf.tif"), "--from", str(inputs / "init.json"),
            "--patch-size", "64", "--batch-size", "4", "--steps", str(STEPS), "--device", "cpu",
            "--checkpoint", str(folder / "ck.pt"), "--checkpoint-every", str(EVERY),
            "--out", str(folder / "m"), *extra]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """Final weights of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("reference")
    subprocess.run(_train(inputs, folder), env=ENV, check=True, capture_output=True)
    return load_file(folder / "m.safetensors")


def _kill_and_resume(inputs, folder, reference, seed: int) -> None:
    """SIGKILL a run at a random moment after its first checkpoint, check, resume, compare."""
    checkpoint = folder / "ck.pt"
    process = subprocess.Popen(_train(inputs, folder), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"

    step = int(load_checkpoint(checkpoint)["step"])  # loads although the writer was killed
    assert step % EVERY == 0 and 0 < step < STEPS
    assert not (folder / "m.json").exists()  # the model is only written at the end
    subprocess.run(_train(inputs, folder, "--resume", str(checkpoint)), env=ENV, check=True,
                   capture_output=True)
    assert int(load_checkpoint(checkpoint)["step"]) == STEPS
    resumed = load_file(folder / "m.safetensors")
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)
    orphans = len(list(folder.glob(".ck.pt.*.tmp")))  # a kill inside atomic_path leaves its temp
    print(f"killed after step {step}/{STEPS} checkpoint; {orphans} orphan temp file(s); "
          "resumed weights identical to the uninterrupted run")


def test_sigkill_after_first_checkpoint_then_resume(inputs, reference, tmp_path):
    _kill_and_resume(inputs, tmp_path, reference, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_at_random_moments_then_resume(inputs, reference, tmp_path, seed):
    _kill_and_resume(inputs, tmp_path, reference, seed)


@pytest.mark.parametrize("name", ["out.ome.tif", "out.ome.zarr"])
def test_a_killed_pyramid_write_is_cleaned_by_the_next_run(tmp_path, name):
    """SIGKILL while a pyramid is written leaves hidden temporary data beside it (38-131 MiB
    each, that no rerun removed); the next write of that name removes it, keeps the earlier
    output until replaced, and leaves only the new output."""
    import numpy as np

    from napari_comir.core.tiled_resample import resample_to_file
    from napari_comir.core.transforms import AffineTransform

    code = ("import numpy as np; from napari_comir.core.tiled_resample import resample_to_file;"
            "from napari_comir.core.transforms import AffineTransform;"
            "image = np.random.default_rng(0).random((6000, 6000), dtype=np.float32);"
            "events = resample_to_file(image, AffineTransform.rigid(3.0, (5, 7)), (6000, 6000),"
            f" {str(tmp_path / name)!r}); [None for _ in events]")
    writer = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(f".{name}.") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and writer.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # some tiles written
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]  # left behind
    image = np.random.default_rng(1).random((200, 300), dtype=np.float32)
    for _ in range(2):  # the second run replaces the first one's output
        list(resample_to_file(image, AffineTransform.rigid(0.0, (0, 0)), (200, 300), tmp_path / name))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
