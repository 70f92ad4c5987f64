"""Batch registration throughput: pairs/s with 1 and 2 Dask workers vs the Python API in a loop.

Registers the real pairs of ``shared/data/bf_shg/pairs.csv`` (512² SHG fixed, BF moving) with
:func:`napari_comir.batch.run_batch` on a local cluster of N single-threaded worker processes,
and sequentially with :func:`napari_comir.api.register_multimodal` (one process, torch's default
threads). "total" includes cluster start-up and model loading; "steady" is the rate between the
first and the last finished pair.

Usage::

    nice -n 10 python benchmarks/batch.py [--workers 1 2] [--limit 20] [--model bf-shg]

Without the bundled model an untrained model of the default architecture is used (same cost).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"


def _model_path(name: str, folder: Path) -> str:
    from napari_comir import api
    from napari_comir.core.errors import ModelFileError

    try:
        api.load_model(name, "cpu")
        return name
    except ModelFileError:
        return str(api.save_model(api.new_model("bf-shg"), folder / "untrained"))


def _pairs_csv(limit: int, folder: Path) -> tuple[Path, int]:
    """The first ``limit`` rows of the shared pairs CSV, with absolute image paths."""
    with open(DATA / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["name", "shg_file", "bf_file"], extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "shg_file": str(DATA / r["shg_file"]),
                          "bf_file": str(DATA / r["bf_file"])} for r in rows)
    return path, len(rows)


def bench_dask(pairs: Path, model: str, workers: int, out: Path) -> dict:
    from napari_comir.batch import run_batch

    start = time.perf_counter()
    events, finished = [], []
    for event in run_batch(pairs, model, out, n_workers=workers):
        events.append(event)
        finished.append(time.perf_counter())
    summary = events[-1].result
    finished = finished[:-1]  # the last event is the summary
    return {"total": summary["total"] / (finished[-1] - start), "errors": summary["errors"],
            "steady": (len(finished) - 1) / (finished[-1] - finished[0])}


def bench_api(pairs: Path, model_name: str) -> dict:
    from napari_comir import api

    start = time.perf_counter()
    model = api.load_model(model_name, "cpu")
    with open(pairs, newline="") as handle:
        rows = list(csv.DictReader(handle))
    finished = []
    for row in rows:
        api.register_multimodal(api.read_image(row["shg_file"]), api.read_image(row["bf_file"]),
                                model)
        finished.append(time.perf_counter())
    return {"total": len(rows) / (finished[-1] - start), "errors": 0,
            "steady": (len(finished) - 1) / (finished[-1] - finished[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=20, help="pairs to register (default 20)")
    parser.add_argument("--model", default="bf-shg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="comir-batch-") as tmp:
        folder = Path(tmp)
        model = _model_path(args.model, folder)
        pairs, n = _pairs_csv(args.limit, folder)
        print(f"{n} pairs, model {model}")
        print(f"{'runner':>20} {'total pairs/s':>14} {'steady pairs/s':>15} {'errors':>7}")
        results = [("API, sequential", bench_api(pairs, model))]
        for workers in args.workers:
            results.append((f"dask, {workers} worker(s)",
                            bench_dask(pairs, model, workers, folder / f"out{workers}")))
        for label, r in results:
            print(f"{label:>20} {r['total']:14.3f} {r['steady']:15.3f} {r['errors']:>7}")


if __name__ == "__main__":
    main()
