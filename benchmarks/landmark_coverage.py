"""How far an affine map fitted to a few landmarks is off, by how much of the image they cover.

On each H&E-vs-IHC pair of ``../shared/data/he_ihc`` (80 manual landmarks a pair), random
subsets of 4-8 landmark pairs are drawn; the affine map fitted to a subset
(:func:`napari_comir.core.registration.landmarks.fit_landmarks`) is scored by its mean distance
over all 80 landmarks, as a multiple of the best affine map's (fitted to all 80), and binned by
the subset's coverage of the moving image
(:func:`~napari_comir.core.registration.landmarks.landmark_coverage`: the convex hull's area over
the image's). What ``MIN_COVERAGE`` (the dock's warning) is set from.

Usage: ``python benchmarks/landmark_coverage.py [--draws 400] [--seed 0]``
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from napari_comir.core.errors import InputError
from napari_comir.core.io.landmarks import read_landmarks
from napari_comir.core.registration.landmarks import MIN_COVERAGE, fit_landmarks, landmark_coverage

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc"
BINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0)


def mean_error(transform, moving_xy: np.ndarray, fixed_xy: np.ndarray) -> float:
    return float(np.linalg.norm(transform.apply_xy(moving_xy) - fixed_xy, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=400, help="subsets drawn per pair (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []  # (coverage, error over all landmarks / the best affine map's)
    with (DATA / "pairs.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    for pair in pairs:
        fixed_xy = read_landmarks(DATA / pair["fixed_landmarks"])
        moving_xy = read_landmarks(DATA / pair["moving_landmarks"])
        shape = Image.open(DATA / pair["moving_image"]).size[::-1]
        best = mean_error(fit_landmarks(fixed_xy, moving_xy)[0], moving_xy, fixed_xy)
        for _ in range(args.draws):
            chosen = rng.choice(len(moving_xy), rng.integers(4, 9), replace=False)
            try:
                fitted, _ = fit_landmarks(fixed_xy[chosen], moving_xy[chosen])
            except InputError:  # on one line
                continue
            rows.append((landmark_coverage(moving_xy[chosen], shape),
                         mean_error(fitted, moving_xy, fixed_xy) / best))
    rows = np.array(rows)
    print(f"{len(pairs)} pairs, {len(rows)} subsets of 4-8 landmarks (seed {args.seed}); the dock "
          f"warns under {MIN_COVERAGE:.0%}\n")
    print("| coverage of the moving image | subsets | median error / best affine map's | 90th percentile |")
    print("|---|---|---|---|")
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        ratios = rows[(rows[:, 0] >= low) & (rows[:, 0] < high), 1]
        if len(ratios):
            print(f"| {low:.0%}-{high:.0%} | {len(ratios)} | {np.median(ratios):.2f} | "
                  f"{np.percentile(ratios, 90):.2f} |")


if __name__ == "__main__":
    main()
