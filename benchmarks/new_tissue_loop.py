"""The new-tissue loop, measured: register one pair the model handles badly (here by
landmarks), accept it, fine-tune on that one accepted pair, register the rest.

The "new tissue" is the grey bright field: the bundled bf-shg saw only colour H&E, and on the
20 raw cases in grey it fails a few. A person clicks five landmark pairs on the case the model
handles worst (simulated: the reference transform plus 2 px of noise per click), the landmark
transform is refined and accepted (the grey H&E resampled onto its SHG), the model is fine-tuned
on that single pair for ``--seconds`` on the CPU (the API's gentle default: lr 1e-4, BatchNorm
statistics kept), and every raw case is registered again, grey and colour.

Usage: ``python benchmarks/new_tissue_loop.py [--teach 1B_D2] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir import api  # noqa: E402
from napari_comir.core.data import AlignedPair  # noqa: E402
from napari_comir.core.evaluation import raw_cases  # noqa: E402
from napari_comir.core.training import FINE_TUNE_LR, TrainConfig  # noqa: E402

RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg_raw"


def grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def score(model, cases, to_grey: bool) -> tuple[int, float, list[str]]:
    """(successes, median error, names failed) of registering every case."""
    errors, failed = [], []
    for case in cases:
        moving = grey(case.moving) if to_grey else case.moving
        error = case.error(api.register_multimodal(case.fixed, moving, model).transform)
        errors.append(error)
        if error > case.success_px:
            failed.append(case.name)
    return len(cases) - len(failed), float(np.median(errors)), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teach", default="1B_D2", help="the case fine-tuned on (default 1B_D2)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = raw_cases(RAW)
    model = api.load_model("bf-shg", "cpu")
    before_grey, before_colour = score(model, cases, True), score(model, cases, False)
    print(f"bundled bf-shg: grey {before_grey[0]}/20 (median {before_grey[1]:.2f} px, failed "
          f"{', '.join(before_grey[2])}); colour {before_colour[0]}/20 ({before_colour[1]:.2f} px)")

    case = {c.name: c for c in cases}[args.teach]
    rng = np.random.default_rng(args.seed)
    clicks_moving = np.array([[90.0, 100.0], [420.0, 110.0], [400.0, 420.0], [100.0, 400.0],
                              [256.0, 250.0]])
    clicks_fixed = case.truth.apply_xy(clicks_moving) + rng.normal(0, 2.0, clicks_moving.shape)
    from_landmarks, residuals = api.fit_landmarks(clicks_fixed, clicks_moving, "affine")
    moving = grey(case.moving)
    refined = api.register_multimodal(case.fixed, moving, model, initial_transform=from_landmarks)
    print(f"teach on {case.name}: landmarks {case.error(from_landmarks):.2f} px off (residuals "
          f"{residuals.mean():.1f} px), refined {case.error(refined.transform):.2f} px, "
          f"likely {refined.success_likely}")
    accepted = api.resample(moving, refined.transform, case.fixed.shape[:2])
    pair = AlignedPair({"shg": case.fixed, "bf": accepted}, name=case.name)
    config = TrainConfig(steps=100000, max_seconds=args.seconds, lr=FINE_TUNE_LR,
                         freeze_batchnorm=True, seed=args.seed, device="cpu")
    started = time.perf_counter()
    *_, last = api.fine_tune(model, [pair], config)
    tuned = last.result
    print(f"fine-tuned {last.step} steps in {time.perf_counter() - started:.0f} s, last loss "
          f"{last.metrics['loss']:.3g}")
    after_grey, after_colour = score(tuned, cases, True), score(tuned, cases, False)
    print(f"fine-tuned: grey {after_grey[0]}/20 (median {after_grey[1]:.2f} px, failed "
          f"{', '.join(after_grey[2]) or 'none'}); colour {after_colour[0]}/20 "
          f"({after_colour[1]:.2f} px, failed {', '.join(after_colour[2]) or 'none'})")


if __name__ == "__main__":
    main()
