"""Bounded memory by shape: `register` with the bundled bf-shg model, one fresh process per shape,
peak resident memory (``ru_maxrss``) within the cap stated in docs/reliability.md
(``benchmarks/memory.py``: 900 MiB + 64 B per pixel of the two images), for a square pair, a pair
at the 8:1 limit (grey moving image) and one beyond it (refused before any work; 64 x 4096 once
took 9.9 GiB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"


@pytest.fixture(scope="module")
def memory():
    spec = importlib.util.spec_from_file_location("memory_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("shape", "grey"), [("512x512", False), ("128x1024", True),
                                             ("256x4096", False)])
def test_register_peak_memory_is_within_the_cap(memory, shape, grey):
    record = memory.measure(shape, grey, timeout=120)
    cap = memory.memory_cap_mib(record["pixels"])
    assert record["peak_mib"] <= cap, record
    if shape == "256x4096":  # 16:1: refused before the CoMIRs (before: after them, 2.1 s, 466 MiB)
        assert "too thin to register" in record["refused"], record
        assert record["seconds"] < 0.5, record
    else:
        assert "refused" not in record, record


@pytest.mark.parametrize("pixel_sizes", [pytest.param("1,8", marks=pytest.mark.slow), "8,1", "1,100"])
def test_memory_follows_the_pixels_not_the_pixel_size_ratio(memory, pixel_sizes):
    """A 512² pair with pixel sizes 1:8 reached 5.98 GiB (the coarser image was enlarged 8-fold);
    now the finer one is reduced, within the cap of the pixels given; 1:100 leaves too few
    pixels and is refused before any work, saying what would fit."""
    record = memory.measure("512x512", False, timeout=120, pixel_sizes=pixel_sizes)
    assert record["peak_mib"] <= memory.memory_cap_mib(record["pixels"]), record
    if pixel_sizes == "1,100":
        assert "at most 8-fold fits these images" in record["refused"], record
        assert record["seconds"] < 0.5, record
    else:
        assert "refused" not in record, record


def _peak_mib_of(code: str) -> float:
    """Peak resident memory (MiB) of ``code`` run in a fresh process, which must print "ok"."""
    import subprocess
    import sys

    # VmHWM, the program's own peak: ru_maxrss keeps the forking test runner's across exec
    wrapped = (f"{code}\nimport re; print('ok', re.search(r'VmHWM:\\s+(\\d+)', "
               "open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    return int(done.stdout.split()[-1]) / 1024


def test_fit_landmarks_memory_is_linear_in_the_pairs():
    """10 000 landmark pairs gave a MemoryError (a (2N)² SVD); now a few MiB, and exact."""
    peak = _peak_mib_of(
        "import numpy as np\n"
        "from napari_comir.core.registration.landmarks import fit_landmarks\n"
        "moving = np.random.default_rng(0).random((10000, 2)) * 1000\n"
        "fixed = moving @ np.array([[1.1, 0.2], [-0.1, 0.9]]).T + (5, -7)\n"
        "found, residuals = fit_landmarks(fixed, moving, 'affine')\n"
        "assert residuals.max() < 1e-6, residuals.max()\n"
        "assert np.allclose(found.matrix_xy[:2], [[1.1, 0.2, 5], [-0.1, 0.9, -7]])\n")
    assert peak < 400


def test_sizes_from_headers_and_arguments_are_refused_before_any_work(tmp_path):
    """A TIFF header claiming 10⁶ x 10⁶ px gave a MemoryError (read whole) and `apply --like`
    on it ran until killed; resampling onto 200 000² px asked for 298 GiB: each is refused in
    one line before a pixel is read or allocated."""
    import numpy as np
    import tifffile

    from napari_comir import api
    from napari_comir.core.errors import InputError
    from napari_comir.core.io.slides import open_image
    from napari_comir.core.resampling import resample
    from napari_comir.core.transforms import AffineTransform

    path = tmp_path / "claims.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), tile=(16, 16))
    with tifffile.TiffFile(path, mode="r+") as tif:  # a small file whose header lies
        for tag in ("ImageWidth", "ImageLength"):
            tif.pages[0].tags[tag].overwrite(1_000_000)
    with pytest.raises(InputError, match="1000000 x 1000000 px .* is more than"):
        open_image(path)
    with pytest.raises(InputError, match="would take 931 GiB of memory; .* at most"):
        api.read_image(path)
    with pytest.raises(InputError, match="onto a 200000 x 200000 px grid would take"):
        resample(np.zeros((64, 64, 3), np.uint8), AffineTransform.rigid(), (200_000, 200_000))


def test_a_single_level_image_is_reduced_without_reading_it_whole(tmp_path):
    """Single-level (non-pyramidal) 16384² / 30000² pairs peaked at 1.4 / 3.6 GiB: the overview
    the whole-slide route starts from is block-averaged from full resolution there. It is read in
    pieces, so its peak does not grow with the pixels: 16384² (64 x the pixels of 2048²; 256 MiB
    of uint8, 1 GiB as float32 if read whole) may add at most 64 MiB."""
    import numpy as np
    import tifffile

    tile = (np.add.outer(np.arange(512), 3 * np.arange(512)) % 251).astype(np.uint8)
    peaks = {}
    for side in (2048, 16384):
        path = tmp_path / f"single-level-{side}.tif"
        tifffile.imwrite(path, (tile for _ in range((side // 512) ** 2)), shape=(side, side),
                         dtype=np.uint8, tile=(512, 512), compression="zlib")
        peaks[side] = _peak_mib_of(
            "from napari_comir.core.io.slides import open_image\n"
            "from napari_comir.core.pyramid import read_reduced\n"
            f"slide = open_image({str(path)!r}, lazy_side=1024)\n"
            "assert len(slide.levels) == 1, slide.levels\n"
            f"overview = read_reduced(slide, {side // 1024}).pixels\n"
            "assert overview.shape == (1024, 1024), overview.shape\n"
            f"window = read_reduced(slide, 1, slice({side // 2}, {side // 2 + 512}), "
            f"slice(512, 1024)).pixels\n"
            "assert abs(float(overview.mean()) - float(window.mean())) < 2\n")
        path.unlink()
    assert peaks[16384] - peaks[2048] < 64, peaks
