"""Peak memory of `register` by image shape: square, thin (near the 8:1 limit), grey and RGB.

Each shape runs in a fresh Python process (``python benchmarks/memory.py --child ...``) that
loads the bundled ``bf-shg`` model, builds a fixed SHG / moving BF pair of that shape from a real
512² pair (``../shared/data/bf_shg/X02Y08_*``, mirrored to any size; a synthetic pair without
it), the moving image shifted by (7, -5) px, and registers them with
``api.register_multimodal``. It reports its resident memory just before registering ("base":
Python, torch, the model and the two input images) and its peak (``ru_maxrss``), and the
parent prints the table and checks the cap :func:`memory_cap_mib`.

Usage: ``nice -n 10 python benchmarks/memory.py [--shapes 256x256,64x512] [--grey] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SQUARE = ["256x256", "512x512", "1024x1024", "2048x2048", "4096x4096"]
THIN = ["64x512", "128x1024", "256x2048", "512x4096", "4096x512"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"

#: The stated cap, in MiB, of the peak resident memory of a `register` process (Python, torch,
#: the bundled model and the images included) for a fixed and a moving image of ``pixels`` pixels
#: in all (rows x cols of each, summed): see docs/reliability.md, "Bounded memory". About 300 MiB
#: are Python, torch and the model; ~550 MiB one 1024² tile through both networks at once (the
#: most the tiled inference holds); the rest grows with the pixels (CoMIRs, the registration's
#: pyramid and warps): 64 B a pixel held at 4096² (measured 52-64).
CAP_BASE_MIB = 900
CAP_BYTES_PER_PIXEL = 64


def memory_cap_mib(pixels: int) -> float:
    """The cap (MiB) for a pair with ``pixels`` pixels in all (fixed + moving)."""
    return CAP_BASE_MIB + CAP_BYTES_PER_PIXEL * pixels / 2**20


def make_pair(rows: int, cols: int, grey: bool = False):
    """A fixed SHG (grey uint8) and moving BF (RGB, or grey with ``grey``) pair of one shape,
    the moving image shifted by (7, -5) px."""
    import numpy as np

    if (SHARED / "X02Y08_BF.tif").is_file():
        from napari_comir.core.io import read_image

        bf, shg = read_image(SHARED / "X02Y08_BF.tif"), read_image(SHARED / "X02Y08_SHG.tif")
    else:
        from napari_comir.core.synthetic import synthetic_pair

        bf, shg = synthetic_pair((512, 512), seed=0)

    def mirrored(image, shape):  # mirror-tiled to ``shape``: no seams
        pad = [(0, max(0, shape[0] - image.shape[0])), (0, max(0, shape[1] - image.shape[1]))]
        pad += [(0, 0)] * (image.ndim - 2)
        return np.pad(image, pad, mode="symmetric")[: shape[0], : shape[1]]

    big = (rows + 16, cols + 16)
    shg_big, bf_big = mirrored(shg, big), mirrored(bf, big)
    fixed = np.ascontiguousarray(shg_big[8:8 + rows, 8:8 + cols])
    moving = np.ascontiguousarray(bf_big[3:3 + rows, 15:15 + cols])
    if grey:
        moving = np.rint(moving @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return fixed, moving


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux: ``VmHWM``, which belongs to this program
    alone; ``ru_maxrss`` also keeps the peak of the process it was forked from (a big test
    runner), across ``exec``."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def child(shape: str, grey: bool, pixel_sizes: str | None = None) -> None:
    import psutil

    from napari_comir import api
    from napari_comir.core.errors import ComirError

    rows, cols = map(int, shape.split("x"))
    model = api.load_model("bf-shg", "cpu")
    fixed, moving = make_pair(rows, cols, grey)
    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    try:
        sizes = dict(zip(("fixed_pixel_size", "moving_pixel_size"),
                         map(float, pixel_sizes.split(",")), strict=True)) if pixel_sizes else {}
        result = api.register_multimodal(fixed, moving, model, **sizes)
        outcome = {"shift_xy": [float(v) for v in result.transform.matrix_xy[:2, 2]],
                   "likely": bool(result.success_likely)}
    except ComirError as exc:  # e.g. more elongated than 8:1
        outcome = {"refused": str(exc)}
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    print(json.dumps({"shape": shape, "grey": grey, "pixel_sizes": pixel_sizes, "pixels": 2 * rows * cols,
                      "base_mib": base / 2**20, "peak_mib": peak / 2**20, "seconds": seconds,
                      **outcome}))


def measure(shape: str, grey: bool = False, timeout: float = 900,
            pixel_sizes: str | None = None) -> dict:
    """Run one shape in a fresh process (``pixel_sizes`` "FIXED,MOVING" µm: registered with
    them); its JSON record."""
    command = [sys.executable, __file__, "--child", shape] + (["--grey"] if grey else []) + (
        ["--pixel-sizes", pixel_sizes] if pixel_sizes else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shape}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(SQUARE + THIN))
    parser.add_argument("--grey", action="store_true", help="also every shape with a grey moving image")
    parser.add_argument("--pixel-sizes", metavar="FIXED,MOVING",
                        help="register with these pixel sizes (µm), e.g. 1,8")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the records here")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.grey, args.pixel_sizes)
    records = []
    print(f"{'shape':>10s} {'moving':>6s} {'MP':>6s} {'base MiB':>8s} {'peak MiB':>8s} "
          f"{'work MiB':>8s} {'B/px':>6s} {'cap MiB':>8s} {'s':>6s}", flush=True)
    for shape in args.shapes.split(","):
        for grey in (False, True) if args.grey else (False,):
            r = measure(shape, grey, pixel_sizes=args.pixel_sizes)
            records.append(r)
            work = r["peak_mib"] - r["base_mib"]
            cap = memory_cap_mib(r["pixels"])
            print(f"{shape:>10s} {'grey' if grey else 'RGB':>6s} {r['pixels'] / 1e6:6.2f} "
                  f"{r['base_mib']:8.0f} {r['peak_mib']:8.0f} {work:8.0f} "
                  f"{work * 2**20 / r['pixels']:6.0f} {cap:8.0f} {r['seconds']:6.1f}"
                  + ("" if r["peak_mib"] <= cap else "  OVER THE CAP")
                  + (f"  refused: {r['refused']}" if "refused" in r else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
