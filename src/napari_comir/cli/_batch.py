"""``napari-comir batch``: many pairs of a CSV registered in parallel (Dask), resumably."""

from __future__ import annotations

import argparse
import sys

from ..core.defaults import (
    DEFAULT_METHOD,
    DEFAULT_MODEL_NAME,
    DEFAULT_ROTATION_RANGE,
    DEFAULT_TRANSFORM,
    REGISTRATION_METHODS,
    TRANSFORM_CHOICES,
)
from ._output import add_compression, silence_output

EPILOG = """The CSV lists one pair per row: columns name, shg_file and bf_file (change them with
--fixed-column / --moving-column); relative paths are relative to the CSV. Results go to
OUT/results.csv (one row per pair: transform, score, status ok|error, error message) and
OUT/pairs/<name>.json. Rerunning the same command skips pairs already done.

examples:
  napari-comir batch pairs.csv --model bf-shg --out results/ --resampled
  napari-comir batch pairs.csv --model my-model.json --out results/ --workers 4
  napari-comir batch pairs.csv --out results/ --scheduler tcp://10.0.0.5:8786
"""


def add_parser(sub) -> None:
    """The ``batch`` sub-command's options."""
    batch = sub.add_parser("batch", help="register many pairs listed in a CSV, in parallel (Dask); "
                           "resumable", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("pairs", help="CSV of pairs (columns name, shg_file, bf_file)")
    batch.add_argument("--model", default=DEFAULT_MODEL_NAME,
                       help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    batch.add_argument("--out", required=True, help="output folder (results.csv, pairs/, resampled/)")
    batch.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. "
                       "tcp://host:8786 (default: a local cluster)")
    batch.add_argument("--workers", type=int, metavar="N",
                       help="local worker processes (default: one per CPU core)")
    batch.add_argument("--threads-per-worker", type=int, metavar="N", help="default 1")
    batch.add_argument("--resampled", action="store_true",
                       help="also write each moving image resampled onto its fixed grid")
    add_compression(batch, "--resampled")
    batch.add_argument("--method", default=DEFAULT_METHOD, choices=REGISTRATION_METHODS,
                       help="global rotation x translation search (default) or SIFT + RANSAC")
    batch.add_argument("--transform", default=DEFAULT_TRANSFORM, choices=TRANSFORM_CHOICES,
                       help="transform model, as for register (default affine); deformable "
                       "writes each kept field to OUT/fields/<pair>.npz")
    batch.add_argument("--rotation-range", type=float, default=DEFAULT_ROTATION_RANGE, metavar="DEG",
                       help="search rotations within ±DEG degrees (default 180: any rotation)")
    batch.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="scales searched (default 0.8 1.25)")
    batch.add_argument("--fixed-column", default="shg_file",
                       help="CSV column of the fixed images (default shg_file)")
    batch.add_argument("--moving-column", default="bf_file",
                       help="CSV column of the moving images (default bf_file)")
    batch.set_defaults(func=run)


def run(args) -> int:
    """Exit status 0 if every pair registered, 1 if some failed (Dask is imported only here)."""
    from tqdm.auto import tqdm

    from ..batch import run_batch

    events = run_batch(args.pairs, args.model, args.out, scheduler=args.scheduler,
                       n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                       resampled=args.resampled, compression=args.compression,
                       fixed_column=args.fixed_column,
                       moving_column=args.moving_column, method=args.method,
                       transform=args.transform, rotation_range=args.rotation_range,
                       scale_range=args.scale_range)
    try:
        with tqdm(desc="batch", unit="pair", dynamic_ncols=True, file=sys.stderr) as bar:
            for event in events:
                bar.total, bar.n = event.total, event.step
                bar.set_postfix(ok=event.metrics["ok"], errors=event.metrics["errors"],
                                refresh=False)
                bar.refresh()
    except BrokenPipeError:  # the reader went away (`| head`): stop the cluster now
        silence_output()
        events.close()  # finished pairs stay recorded; a rerun continues
        raise
    summary = event.result
    print(f"{summary['ok']}/{summary['total']} pairs ok ({summary['skipped']} already done), "
          f"{summary['errors']} failed -> {summary['results_csv']}")
    return 1 if summary["errors"] else 0
