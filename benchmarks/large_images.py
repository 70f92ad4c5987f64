"""Tiled CoMIR inference on large images: wall time and peak memory, streamed from disk to disk.

For each size, a fresh subprocess (so peak memory is its own) reads an uncompressed SHG-like
TIFF through ``tifffile.memmap`` and writes the CoMIR into a ``numpy.memmap`` (``out=`` of
:func:`napari_comir.core.inference.comir_tiles`). A sampler thread records, every 0.1 s, the
process's resident memory split into anonymous (heap: what must fit in RAM) and file-backed
(memmap pages, which the kernel can write back and evict under pressure).

Usage::

    nice -n 10 python benchmarks/large_images.py [--sizes 2048 8192 16384] [--model bf-shg]
        [--tile 1024] [--workdir /tmp/comir-large]

The model defaults to the bundled ``bf-shg``; without it an untrained model of the default
architecture is used (same cost). ``--model tiny`` (base 4, depth 3) runs ~5x faster with the
same memory pattern, to measure memory at sizes too slow for a CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MIB = 1 << 20


def _model(name: str):
    """A saved model, "tiny" (untrained, base 4 depth 3: fast, same memory pattern), or the
    default architecture untrained when the named model is not installed."""
    from napari_comir import api
    from napari_comir.core.errors import ModelFileError

    if name == "tiny":
        architecture = {"type": "unet", "base_channels": 4, "depth": 3}
        return api.new_model("bf-shg", architecture=architecture), "tiny (base 4, depth 3)"
    try:
        return api.load_model(name, "cpu"), name
    except ModelFileError:
        return api.new_model("bf-shg"), "untrained bf-shg (default architecture)"


def make_input(path: Path, size: int) -> None:
    """An uncompressed uint8 TIFF tiled from a synthetic SHG image, written in strips."""
    import tifffile

    from napari_comir.core.synthetic import synthetic_pair

    _, shg = synthetic_pair((512, 512), seed=0)
    image = tifffile.memmap(path, shape=(size, size), dtype=np.uint8)
    strip = np.tile(shg, (1, -(-size // 512)))[:, :size]
    for row in range(0, size, 512):
        image[row:row + 512] = strip[: min(512, size - row)]
    image.flush()
    del image


class MemorySampler(threading.Thread):
    """Peak resident memory of this process (MiB): total, anonymous and file-backed."""

    def __init__(self, period: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.process, self.period = psutil.Process(), period
        self.peak = {"rss": 0.0, "anonymous": 0.0, "file_backed": 0.0}
        self.running = True

    def sample(self) -> None:
        info = self.process.memory_info()
        values = {"rss": info.rss, "anonymous": info.rss - info.shared, "file_backed": info.shared}
        for key, value in values.items():
            self.peak[key] = max(self.peak[key], value / MIB)

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(self.period)

    def stop(self) -> dict:
        self.running = False
        self.join()
        self.sample()
        return self.peak


def child(size: int, model_name: str, tile: int, workdir: Path) -> dict:
    """Run one size in this process and return its measurements."""
    import tifffile
    import torch

    from napari_comir.core.inference import comir_tiles

    model, model_label = _model(model_name)
    source = workdir / f"shg_{size}.tif"
    if not source.is_file():
        make_input(source, size)
    image = tifffile.memmap(source, mode="r")
    channels = model.card.comir_channels
    out = np.lib.format.open_memmap(workdir / f"comir_{size}.npy", mode="w+", dtype=np.float32,
                                    shape=(size, size, channels))
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    tiles = sum(1 for _ in comir_tiles(model, image, "shg", tile=tile, out=out)) - 1
    out.flush()
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    return {"size": size, "megapixels": size * size / 1e6, "seconds": seconds,
            "megapixels_per_s": size * size / 1e6 / seconds, "tiles": tiles,
            "peak_rss_mib": peak["rss"], "peak_anonymous_mib": peak["anonymous"],
            "peak_file_backed_mib": peak["file_backed"], "torch_threads": torch.get_num_threads(),
            "model": model_label, "tile": tile,
            "output_finite": bool(np.isfinite(out[::97, ::97]).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--model", default="bf-shg", help='model name/file, or "tiny"')
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.tile, args.workdir)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="comir-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'size':>7} {'MP':>7} {'s':>8} {'MP/s':>6} {'tiles':>5} {'peak RSS':>9} "
          f"{'anon':>7} {'file':>7}  (MiB)")
    for size in args.sizes:
        run = subprocess.run([sys.executable, __file__, "--child", str(size), "--model", args.model,
                              "--tile", str(args.tile), "--workdir", str(workdir)],
                             capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{size:>7} {r['megapixels']:7.1f} {r['seconds']:8.1f} {r['megapixels_per_s']:6.2f} "
              f"{r['tiles']:>5} {r['peak_rss_mib']:9.0f} {r['peak_anonymous_mib']:7.0f} "
              f"{r['peak_file_backed_mib']:7.0f}", flush=True)
        for name in (f"shg_{size}.tif", f"comir_{size}.npy"):
            (workdir / name).unlink(missing_ok=True)
    print(f"model: {r['model']}; tile {r['tile']}; torch threads {r['torch_threads']}")


if __name__ == "__main__":
    main()
