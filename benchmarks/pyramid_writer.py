"""The registered pyramid's writing alone: threads and tile codec, each measured in one run.

An N x N H&E mosaic of the shared aligned BF images (``whole_slide.py``'s ``TileMosaic``, held in
memory) is resampled through a small rotation onto an N x N grid and written as a pyramidal
OME-TIFF by ``resample_to_file`` with each (workers, compression): ``1, zlib`` is the writer as
it was before issue 22 (one thread, zlib tiles). Reported: wall seconds, CPU seconds (all
threads: the work done, which a loaded machine does not inflate as much as the wall time),
output MiB, and the mean absolute difference of level 0 from the one-thread zlib file (0 = the
same pixels).

Usage (rerun on a quiet machine)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pyramid_writer.py --size 8192
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_comir.core.io import read_image
from napari_comir.core.io.slides import open_slide
from napari_comir.core.threads import available_cores
from napari_comir.core.tiled_resample import resample_to_file
from napari_comir.core.transforms import AffineTransform

sys.path.insert(0, str(Path(__file__).parent))
from whole_slide import DATA, TILE, TileMosaic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--configs", default=f"1:zlib,1:jpeg,{available_cores()}:zlib,"
                        f"{available_cores()}:jpeg,{available_cores()}:zstd")
    args = parser.parse_args()
    names = sorted(path.name[:-len("_BF.tif")] for path in DATA.glob("*_BF.tif"))
    grid = -(-args.size // TILE)
    mosaic = TileMosaic([read_image(DATA / f"{name}_BF.tif") for name in names], (grid, grid),
                        seed=7, background=(236, 232, 238))
    image = mosaic[slice(0, args.size), slice(0, args.size)]
    centre = (args.size - 1) / 2
    transform = AffineTransform.about_center(2.5, (centre, centre), (13.2, -7.7))
    print(f"{args.size}² RGB, {available_cores()} cores; workers:compression, wall s, CPU s, MiB, "
          "mean |level 0 - one-thread zlib|")
    with tempfile.TemporaryDirectory() as folder:
        reference = None
        for config in args.configs.split(","):
            workers, compression = config.split(":")
            path = Path(folder) / f"{workers}_{compression}.ome.tif"
            start, cpu = time.perf_counter(), time.process_time()
            for _ in resample_to_file(image, transform, image.shape[:2], path, pixel_size_um=0.5,
                                      compression=compression, workers=int(workers)):
                pass
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            with open_slide(path) as slide:
                level = slide[0:args.size, 0:args.size].astype(np.int16)
            reference = level if reference is None else reference
            print(f"{config:>8s} {seconds:7.1f} {cpu:7.1f} {path.stat().st_size / 2**20:8.0f} "
                  f"{np.abs(level - reference).mean():6.2f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
