"""Registration time and precision by image size, in memory, through each route; elastix beside.

Two kinds of pair per size N (the moving image N x N):

- ``synthetic``: ``core.synthetic.misaligned_pair`` (the BF moved by a rigid −47°, shifted), as
  ``large_registration.py`` registers it;
- ``mosaic``: the shared aligned SHG/BF images as a mosaic of 512 px tiles inside a tissue
  outline (``whole_slide.py``'s ``TileMosaic``), the BF warped by a similarity (2.5°, scale
  0.95, shifted): real tissue at the bundled model's pixel size.

Each is registered with ``api.register_multimodal`` (default options, bundled ``bf-shg``, CPU)
through the route the plan chooses (``route``) and through the full-resolution in-memory route
(``full``: ``COARSE_TO_FINE_SIDE`` raised for the run, as before the size route existed); the
peer ``elastix`` is itk-elastix with its default rigid -> affine maps (``registration.py``'s).
Error: mean corner distance against the truth, px of the fixed image.

Usage (rerun on a quiet machine; ``--routes route,full,elastix`` for all)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/size_route.py --sizes 1024,2048,4096 --routes route,full
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir import api  # noqa: E402
from napari_comir.core.io import read_image  # noqa: E402
from napari_comir.core.resampling import resample
from napari_comir.core.synthetic import misaligned_pair  # noqa: E402
from napari_comir.core.transforms import AffineTransform, corner_error  # noqa: E402
from napari_comir.pipeline import plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from registration import elastix_transform  # noqa: E402
from whole_slide import DATA, TILE, TRUTH, TileMosaic  # noqa: E402


def mosaic_pair(size: int) -> tuple[np.ndarray, np.ndarray, AffineTransform]:
    """(fixed SHG, moving BF, truth moving -> fixed) of real tissue tiles, the moving N x N."""
    names = sorted(path.name[:-len("_SHG.tif")] for path in DATA.glob("*_SHG.tif"))
    shg = [read_image(DATA / f"{name}_SHG.tif") for name in names]
    bf = [read_image(DATA / f"{name}_BF.tif") for name in names]
    grid = max(2, round(size * TRUTH["scale"] / TILE))
    fixed = TileMosaic(shg, (grid, grid), seed=7, background=0)
    bright = TileMosaic(bf, (grid, grid), seed=7, background=(236, 232, 238))
    centre = np.array([(size - 1) / 2, (size - 1) / 2])
    truth = AffineTransform.similarity(TRUTH["angle_deg"], TRUTH["scale"])
    shift = np.array(fixed.shape[1::-1]) / 2 - truth.apply_xy([centre])[0] + (37.3, -21.6)
    truth = AffineTransform.rigid(0.0, tuple(shift)).compose(truth)
    whole = slice(None)
    moving = resample(bright[whole, whole], truth.inverse(), (size, size), cval=236)
    return fixed[whole, whole], moving, truth


def pair(kind: str, size: int):
    if kind == "synthetic":
        moving, fixed, truth = misaligned_pair((size, size), seed=1, angle_deg=-47.0,
                                               translation_xy=(31.0, -18.0))
        return fixed, moving, truth
    return mosaic_pair(size)


def run(route: str, model, fixed, moving) -> tuple[AffineTransform, float, bool | None]:
    start = time.perf_counter()
    if route == "elastix":
        found, likely = elastix_transform(fixed, moving), None
    else:
        side = plan.COARSE_TO_FINE_SIDE
        plan.COARSE_TO_FINE_SIDE = 10**9 if route == "full" else side
        try:
            result = api.register_multimodal(fixed, moving, model)
        finally:
            plan.COARSE_TO_FINE_SIDE = side
        found, likely = result.transform, result.success_likely
    return found, time.perf_counter() - start, likely


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1024,2048,4096")
    parser.add_argument("--kinds", default="synthetic,mosaic")
    parser.add_argument("--routes", default="route,full", help="route, full, elastix")
    args = parser.parse_args()
    model = api.load_model("bf-shg", "cpu")
    print(f"{'kind':>9s} {'size':>5s} {'route':>8s} {'s':>6s} {'error px':>8s} {'likely':>6s}")
    for size in map(int, args.sizes.split(",")):
        for kind in args.kinds.split(","):
            fixed, moving, truth = pair(kind, size)
            for route in args.routes.split(","):
                found, seconds, likely = run(route, model, fixed, moving)
                error = corner_error(truth, found, moving.shape[:2])
                print(f"{kind:>9s} {size:5d} {route:>8s} {seconds:6.2f} {error:8.2f} {str(likely):>6s}",
                      flush=True)
                print(json.dumps({"kind": kind, "size": size, "route": route, "seconds": seconds,
                                  "error_px": error, "likely": likely}), file=sys.stderr)


if __name__ == "__main__":
    main()
