"""Whole-slide registration: a synthetic pyramidal pair of any size, registered and written back.

The fixed SHG is a mosaic of the shared aligned SHG images (512 px tiles in a random order, each
turned by a random quarter turn or mirrored) inside an irregular tissue outline (a smoothed
random field: a slide's sections have outlines; a tile grid alone repeats itself every 512 px);
the moving H&E is the matching bright-field mosaic
warped by a known similarity transform and written as a pyramidal OME-TIFF at another pixel size.
Neither is ever whole in memory. Then ``napari-comir register --resampled out.ome.tif
--export-itk --export-ngff`` runs in a fresh process whose peak RSS is measured, and the found
transform is compared with the truth (mean corner distance, px of the fixed image). The peer,
SimpleITK Mattes MI (similarity, every pixel, 3 starting angles; ``registration.py``'s), runs on
the same overviews the CoMIR search starts from (no whole-slide MI fits in memory or time here),
its answer mapped to full resolution.

``--single-level`` registers copies of the pair as single-level tiled TIFFs instead (no pyramid
to read overviews from: each is block-averaged from full resolution), deleted afterwards.

Usage: ``python benchmarks/whole_slide.py [--size 40000] [--single-level] [--workdir DIR]
[--compression auto]`` (needs ``../shared/data/bf_shg``; the images are made once per size and
kept in DIR, by default ``/tmp/napari-comir-slide``; the moving H&E is written with the default
tile compression, JPEG, as a scanner writes it; ``--compression`` is register's, for the
registered pyramid).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_comir.core.field_transform import DisplacementFieldTransform
from napari_comir.core.io import read_image
from napari_comir.core.io.slides import add_pyramid_levels, open_slide, write_tiff_pyramid
from napari_comir.core.tiled_resample import resample_to_file
from napari_comir.core.transforms import AffineTransform, corner_error

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"
TILE = 512
FIXED_PIXEL_UM = 2.0  # the shared pairs are at about the bundled model's training scale
TRUTH = dict(angle_deg=2.5, scale=0.95)  # moving px -> fixed px; the moving px is 0.95 x 2 µm


class TileMosaic:
    """A lazily assembled mosaic of 512 px tiles (rows, cols[, 3]), each a shared image turned
    by a random quarter turn or mirrored, ``background`` outside the tissue outline; only the
    tiles a slice touches are built."""

    def __init__(self, tiles: list[np.ndarray], grid_rc: tuple[int, int], seed: int, background):
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        self.tiles = tiles
        self.choice = rng.integers(0, len(tiles), grid_rc)
        self.turns = rng.integers(0, 8, grid_rc)  # 4 turns x mirrored or not
        field = ndimage.gaussian_filter(rng.standard_normal(grid_rc), sigma=max(grid_rc) / 10)
        self.tissue = field > np.quantile(field, 0.45)
        self.background = np.full(tiles[0].shape, background, tiles[0].dtype)
        self.shape = (grid_rc[0] * TILE, grid_rc[1] * TILE) + tiles[0].shape[2:]
        self.dtype = tiles[0].dtype
        self.ndim = len(self.shape)

    def tile(self, r: int, c: int) -> np.ndarray:
        if not self.tissue[r, c]:
            return self.background
        image = np.rot90(self.tiles[self.choice[r, c]], self.turns[r, c] % 4)
        return image[:, ::-1] if self.turns[r, c] >= 4 else image

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        out = np.zeros((r1 - r0, c1 - c0) + self.shape[2:], self.dtype)
        for tr in range(r0 // TILE, (r1 - 1) // TILE + 1):
            for tc in range(c0 // TILE, (c1 - 1) // TILE + 1):
                tile = self.tile(tr, tc)
                ys, xs = max(r0, tr * TILE), max(c0, tc * TILE)
                ye, xe = min(r1, (tr + 1) * TILE), min(c1, (tc + 1) * TILE)
                out[ys - r0:ye - r0, xs - c0:xe - c0] = tile[ys - tr * TILE:ye - tr * TILE,
                                                             xs - tc * TILE:xe - tc * TILE]
        return out


def make_pair(size: int, folder: Path) -> AffineTransform:
    """Write fixed.ome.tif (SHG mosaic) and moving.ome.tif (warped H&E mosaic); return the truth."""
    import zarr

    names = sorted(path.name[:-len("_SHG.tif")] for path in DATA.glob("*_SHG.tif"))
    shg = [read_image(DATA / f"{name}_SHG.tif") for name in names]
    bf = [read_image(DATA / f"{name}_BF.tif") for name in names]
    grid = round(size * TRUTH["scale"] / TILE)
    fixed = TileMosaic(shg, (grid, grid), seed=7, background=0)
    bright = TileMosaic(bf, (grid, grid), seed=7, background=(236, 232, 238))  # bare glass
    with tempfile.TemporaryDirectory(dir=folder) as work:
        group = zarr.open_group(work, mode="w")
        base = group.create_array("0", shape=fixed.shape, chunks=(TILE, TILE), dtype=fixed.dtype)
        for r in range(grid):
            for c in range(grid):
                base[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = fixed.tile(r, c)
        write_tiff_pyramid(folder / "fixed.ome.tif", add_pyramid_levels(group), FIXED_PIXEL_UM)
    centre = np.array([(size - 1) / 2, (size - 1) / 2])
    truth = AffineTransform.similarity(TRUTH["angle_deg"], TRUTH["scale"])
    # the moving image's centre lands on the fixed mosaic's centre, shifted by (37.3, -21.6) px
    shift = np.array(fixed.shape[1::-1]) / 2 - truth.apply_xy([centre])[0] + (37.3, -21.6)
    truth = AffineTransform.rigid(0.0, tuple(shift)).compose(truth)
    # moving[m] = bright-field mosaic[truth(m)]: resample with the fixed -> moving map
    for _ in resample_to_file(bright, truth.inverse(), (size, size), folder / "moving.ome.tif",
                              pixel_size_um=FIXED_PIXEL_UM * TRUTH["scale"]):
        pass
    return truth


def _peak_kib(pid: int) -> int:
    """A running process's peak resident memory so far (Linux ``VmHWM``, KiB; 0 if unknown)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=40000, help="side of the moving H&E (px)")
    parser.add_argument("--workdir", default="/tmp/napari-comir-slide")
    parser.add_argument("--compression", default="auto", help="of the registered pyramid's tiles "
                        "(register --compression; auto: JPEG for this RGB H&E)")
    parser.add_argument("--single-level", action="store_true",
                        help="register single-level tiled TIFF copies of the pair")
    parser.add_argument("--transform", default="affine", help="register's --transform (deformable: "
                        "the field stage's seconds and memory on top; the pair itself is not bent)")
    args = parser.parse_args()
    folder = Path(args.workdir) / str(args.size)
    folder.mkdir(parents=True, exist_ok=True)
    truth_file = folder / "truth.json"
    if not truth_file.is_file():
        start = time.perf_counter()
        truth_file.write_text(make_pair(args.size, folder).to_json())
        print(f"made the pair in {time.perf_counter() - start:.0f} s")
    truth = AffineTransform.from_json(truth_file.read_text())
    fixed_file, moving_file = folder / "fixed.ome.tif", folder / "moving.ome.tif"
    if args.single_level:
        fixed_file, moving_file = single_level(fixed_file), single_level(moving_file)
    try:
        run(folder, fixed_file, moving_file, truth, args.transform, args.compression)
    finally:
        if args.single_level:
            fixed_file.unlink()
            moving_file.unlink()


def single_level(pyramid: Path) -> Path:
    """A copy of a pyramidal OME-TIFF's level 0 as a single-level tiled TIFF (pixel size in its
    resolution tags), beside it."""
    target = pyramid.with_name(pyramid.name.replace(".ome.tif", ".single.tif"))
    with open_slide(pyramid) as slide:
        write_tiff_pyramid(target, slide.levels[:1], slide.pixel_size_um)
    return target


def run(folder: Path, fixed_file: Path, moving_file: Path, truth: AffineTransform,
        transform: str, compression: str = "auto") -> None:
    """``register`` the pair (``--transform transform``, ``--compression compression``) in a fresh
    process; print its time, peak memory and error."""
    command = [str(Path(sys.executable).with_name("napari-comir")), "register",
               "--fixed", str(fixed_file), "--moving", str(moving_file),
               "--out", str(folder / "r.json"), "--resampled", str(folder / "registered.ome.tif"),
               "--export-itk", str(folder / "r.tfm"), "--export-ngff",
               str(folder / ("r.ngff.zarr" if transform == "deformable" else "r.ngff.json")),
               "--device", "cpu", "--transform", transform, "--compression", compression]
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    peak_kib = 0
    while process.poll() is None:  # VmHWM: the command's own peak (ru_maxrss would include ours)
        peak_kib = max(peak_kib, _peak_kib(process.pid))
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"register failed with exit {process.returncode}")
    seconds = time.perf_counter() - start
    peak_mib = peak_kib / 1024
    report = json.loads((folder / "r.json").read_text())
    found = (DisplacementFieldTransform.from_dict(report).affine
             if report["transform"] == "deformable" else AffineTransform.from_dict(report))
    with open_slide(moving_file) as moving, \
            open_slide(folder / "registered.ome.tif") as registered:
        error = corner_error(truth, found, moving.shape[:2])
        levels = [level.shape[:2] for level in registered.levels]
        peer = mutual_information_on_overviews(folder, truth)
        print(json.dumps({
            "moving_px": list(moving.shape[:2]), "fixed_px": list(registered.shape[:2]),
            "seconds_total": round(seconds, 1),
            "seconds_registration": round(report["seconds"], 1), "peak_rss_mib": round(peak_mib),
            "corner_error_px": round(error, 2), "success_likely": report["success_likely"],
            "registered_levels": levels, "registered_pixel_size_um": registered.pixel_size_um,
            "inputs": "single-level" if ".single." in moving_file.name else "pyramidal",
            "transform": report["transform"], "deformable": report.get("deformable"),
            "seconds_deformable": report.get("timings", {}).get("deformable"),
            **peer}, indent=1))


def mutual_information_on_overviews(folder: Path, truth: AffineTransform) -> dict:
    """The MI peer on the overviews CoMIR's global search sees; its time and corner error."""
    sys.path.insert(0, str(Path(__file__).parent))
    from registration import mutual_information

    from napari_comir.core.pyramid import _overview_factors, read_reduced

    with open_slide(folder / "fixed.ome.tif") as fixed, open_slide(folder / "moving.ome.tif") as moving:
        factors = _overview_factors(fixed, moving, fixed.pixel_size_um, moving.pixel_size_um, 1024)
        fixed_lo, moving_lo = read_reduced(fixed, factors[0]), read_reduced(moving, factors[1])
        start = time.perf_counter()
        found = mutual_information(fixed_lo.pixels, moving_lo.pixels, 180.0, sampling=None,
                                   model="similarity")
        seconds = time.perf_counter() - start
        found = fixed_lo.to_full().compose(found).compose(moving_lo.to_full().inverse())
        return {"mi_overview_px": list(fixed_lo.pixels.shape[:2]), "mi_seconds": round(seconds, 1),
                "mi_corner_error_px": round(corner_error(truth, found, moving.shape[:2]), 2)}


if __name__ == "__main__":
    main()
