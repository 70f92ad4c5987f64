"""Calibrate the registration confidence score on CoMIRs: successes vs failures.

Successes: cases of the benchmark protocol (300² crops, ±180°, or the hard variant) cut from the
model's evaluation pairs (bf-shg: the val split; rgb-nir: the four corners of its scene, see
``evaluate_model.py``) whose corner error is within 2 % of the width. Failures: the fixed crop of
one pair registered against the moving crop of a different pair (nothing to find), plus any
benchmark case that failed. Prints both score distributions and how the card's threshold splits them.

Usage: ``python benchmarks/score_calibration.py [--model bf-shg] [--seeds 5] [--hard] [--c4-average]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from evaluate_model import SHARED, evaluation_pairs  # noqa: E402  (a sibling script)

from napari_comir import api  # noqa: E402
from napari_comir.core.evaluation import SCENARIOS, degrade, make_rigid_case, rigid_cases  # noqa: E402
from napari_comir.core.transforms import corner_error  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bf-shg")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--hard", action="store_true",
                        help="the hard variant: 256² crops, |t| <= 40 px, gamma and noise")
    parser.add_argument("--c4-average", action="store_true", help="calibrate C4-averaged CoMIRs")
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding bf_shg/ and zurich/")
    args = parser.parse_args()
    scenario = SCENARIOS["hard" if args.hard else "180"]
    model = api.load_model(args.model, "cpu")
    model.card.c4_average = model.card.c4_average or args.c4_average
    fixed_modality, moving_modality = model.card.fixed_modality, model.card.moving_modality
    pairs = evaluation_pairs(model, args.data)
    good, bad = [], []
    for case in rigid_cases(pairs, scenario, args.seeds, fixed_modality, moving_modality):
        # a decoy: the same transform applied to a different pair, so there is nothing to find
        other = pairs[(case.pair_index + 1) % len(pairs)]
        _, decoy, _ = make_rigid_case(other.images[fixed_modality], other.images[moving_modality],
                                      case.angle, case.shift, scenario.crop)
        if scenario.noisy:
            decoy = degrade(decoy, case.rng)
        result = api.register_multimodal(case.fixed, case.moving, model)
        ok = corner_error(case.truth, result.transform, case.moving.shape[:2]) <= scenario.success_px
        (good if ok else bad).append(result.score)
        bad.append(api.register_multimodal(case.fixed, decoy, model).score)
    good, bad = np.array(good), np.array(bad)
    print(f"successes: n={good.size} min {good.min():.3f} p5 {np.percentile(good, 5):.3f} "
          f"median {np.median(good):.3f}")
    print(f"failures:  n={bad.size} max {bad.max():.3f} p95 {np.percentile(bad, 95):.3f} "
          f"median {np.median(bad):.3f}")
    threshold = model.card.score_threshold
    print(f"model card score_threshold {threshold}: flags {np.mean(good < threshold):.0%} of "
          f"successes as low, passes {np.mean(bad >= threshold):.0%} of failures")


if __name__ == "__main__":
    main()
