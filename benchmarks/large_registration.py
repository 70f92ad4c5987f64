"""Registration of large images through the pyramid: time and peak memory.

For each size, a synthetic misaligned BF/SHG pair (``core.synthetic.misaligned_pair``) is written
as uncompressed TIFFs; a fresh process then memory-maps them and registers them with
``register_pyramid`` (coarse search on ~1024 px block averages, refinement on a full-resolution
window), reporting seconds, peak RSS and the corner error against the known transform.

Usage: ``python benchmarks/large_registration.py [--sizes 2048,4096] [--workdir /tmp/large]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MAKE = r"""
import json, sys, tifffile
from napari_comir.core.synthetic import misaligned_pair
size, folder = int(sys.argv[1]), sys.argv[2]
bf, shg, truth = misaligned_pair((size, size), seed=1, angle_deg=-47.0, translation_xy=(31.0, -18.0))
tifffile.imwrite(f"{folder}/bf_{size}.tif", bf, photometric="rgb")
tifffile.imwrite(f"{folder}/shg_{size}.tif", shg)
open(f"{folder}/truth_{size}.json", "w").write(truth.to_json())
"""

REGISTER = r"""
import json, resource, sys, time, tifffile
from napari_comir import api
from napari_comir.core.pyramid import register_pyramid
from napari_comir.core.transforms import AffineTransform, corner_error
size, folder = int(sys.argv[1]), sys.argv[2]
model = api.load_model("bf-shg", "cpu")
bf, shg = tifffile.memmap(f"{folder}/bf_{size}.tif"), tifffile.memmap(f"{folder}/shg_{size}.tif")
truth = AffineTransform.from_json(open(f"{folder}/truth_{size}.json").read())
start = time.perf_counter()
result = register_pyramid(model, shg, bf)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "score": result.score,
                  "error_px": corner_error(truth, result.transform, bf.shape[:2])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2048,4096")
    parser.add_argument("--workdir", default="/tmp/napari-comir-large")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"{'size':>6s} {'seconds':>8s} {'peak RSS MiB':>12s} {'corner error px':>15s} {'score':>6s}")
    for size in args.sizes.split(","):
        if not Path(args.workdir, f"truth_{size}.json").is_file():
            subprocess.run([sys.executable, "-c", MAKE, size, args.workdir], check=True)
        out = subprocess.run([sys.executable, "-c", REGISTER, size, args.workdir], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{size:>6s} {r['seconds']:8.2f} {r['peak_rss_mib']:12.0f} {r['error_px']:15.2f} "
              f"{r['score']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
