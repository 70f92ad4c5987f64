"""Does ``success_likely`` know when a registration failed? Measured on real, synthetic and garbage pairs.

Positives (a right answer exists): the synthetic rigid cases of the registration benchmark
(``30``, ``180``, ``hard``) on the model's evaluation pairs (bf-shg: the val split; rgb-nir: the
four corners of its scene) and, for bf-shg, the 20 raw BF/SHG cases (colour and grey bright
field). Each is a true success or a failure by its corner error (<= 2 % of the width).
Negatives (no right answer): a fixed image against random noise of several sizes and kinds,
smoothed noise, and the moving image of a *different* pair (for bf-shg: another core's raw
H&E). A constant image must be refused with an error, not scored.

Prints, per group, how often ``success_likely`` was true, and the false-positive rate (garbage,
mismatched or failed results reported likely) and false-negative rate (true successes reported
unlikely); ``--csv`` writes every case's features (score, overlap, scale, stretch, shear).

Usage: ``python benchmarks/confidence.py [--model bf-shg] [--seeds 3] [--mismatched 60] [--csv out.csv]``
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from evaluate_model import SHARED, evaluation_pairs  # noqa: E402  (a sibling script)

from napari_comir import api  # noqa: E402
from napari_comir.core.errors import ComirError  # noqa: E402
from napari_comir.core.evaluation import SCENARIOS, raw_cases, rigid_cases  # noqa: E402
from napari_comir.core.transforms import AffineTransform, corner_error  # noqa: E402


def grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def noise_images(rng: np.random.Generator, n: int):
    """(label, image) garbage stand-ins for a bright field: several sizes and kinds of noise."""
    from scipy import ndimage

    kinds = ("uniform", "gaussian", "smooth", "grey")
    for i in range(n):
        side = int(rng.choice([32, 48, 64, 128, 256, 512]))
        kind = kinds[i % len(kinds)]
        if kind == "uniform":
            image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        elif kind == "gaussian":
            image = np.clip(rng.normal(128, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        elif kind == "smooth":
            field = ndimage.gaussian_filter(rng.normal(size=(side, side, 3)), (side / 32, side / 32, 0))
            image = (255 * (field - field.min()) / np.ptp(field)).astype(np.uint8)
        else:
            image = rng.integers(0, 256, (side, side), dtype=np.uint8)
        yield f"noise {kind} {side}²", image


def matching_crops(case, rng: np.random.Generator, sides, per_side: int):
    """(label, crop, truth) crops of a raw case's moving image that lie wholly over its fixed
    image: a small field against a whole one, the right answer known."""
    fixed_rows, fixed_cols = case.fixed.shape[:2]
    rows, cols = case.moving.shape[:2]
    for side in sides:
        found = 0
        for _ in range(200):  # random places until ``per_side`` lie over the fixed image
            if found == per_side or side >= min(rows, cols):
                break
            row, col = int(rng.integers(0, rows - side)), int(rng.integers(0, cols - side))
            truth = case.truth.compose(AffineTransform.rigid(0.0, (col, row)))
            corners = truth.apply_xy(np.array([[0, 0], [side - 1, 0], [0, side - 1],
                                               [side - 1, side - 1]], float))
            if corners.min() < 0 or (corners.max(axis=0) > (fixed_cols - 1, fixed_rows - 1)).any():
                continue
            found += 1
            crop = case.moving[row:row + side, col:col + side]
            yield f"{case.name} {side}px at ({row}, {col})", crop, truth


def features(result) -> dict:
    parts = result.transform.decompose(result.moving_centre_xy)
    sx, sy = parts.scale_xy
    return {"score": result.score, "detail": result.detail_score, "overlap": result.overlap,
            "scale": float(np.sqrt(abs(sx * sy))),
            "stretch": float(abs(np.log(abs(sx / sy)))), "shear": abs(parts.shear),
            "likely": result.success_likely, "reasons": "; ".join(result.reasons)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bf-shg")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per val pair and synthetic scenario")
    parser.add_argument("--noise", type=int, default=48, help="noise images against real SHGs")
    parser.add_argument("--mismatched", type=int, default=60, help="pairs of different scenes")
    parser.add_argument("--crops", type=int, default=1,
                        help="crops of each raw H&E per side (64, 128, 192, 256 px) against the whole SHG")
    parser.add_argument("--only-crops", action="store_true", help="run the crops group alone")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--csv", type=Path, help="write every case's features here")
    args = parser.parse_args()
    model = api.load_model(args.model, "cpu")
    rows = []

    def run(group: str, label: str, fixed, moving, error_px=None, success_px=None):
        try:
            result = api.register_multimodal(fixed, moving, model)
        except ComirError as exc:
            rows.append({"group": group, "case": label, "refused": str(exc)})
            return None
        row = {"group": group, "case": label, **features(result)}
        if error_px is not None:
            row["error_px"] = error_px(result.transform)
            row["success"] = row["error_px"] <= success_px
        rows.append(row)
        return result

    started = time.perf_counter()
    fixed_modality, moving_modality = model.card.fixed_modality, model.card.moving_modality
    pairs = evaluation_pairs(model, args.data)
    for name in () if args.only_crops else ("30", "180", "hard"):
        scenario = SCENARIOS[name]
        for case in rigid_cases(pairs, scenario, args.seeds, fixed_modality, moving_modality):
            run(f"synthetic {name}", f"{case.pair.name} {case.angle:.0f}°", case.fixed, case.moving,
                lambda t, c=case: corner_error(c.truth, t, c.moving.shape), scenario.success_px)
    rng = np.random.default_rng(0)
    fixed_images = [p.images[fixed_modality] for p in pairs]
    mismatched = [(f"{a.name} vs {b.name}", a.images[fixed_modality], b.images[moving_modality])
                  for a in pairs for b in pairs if a is not b]
    if args.model == "bf-shg" and (args.data / "bf_shg_raw").is_dir():
        cases = raw_cases(args.data / "bf_shg_raw")
        crop_rng = np.random.default_rng(1)
        for case in cases:
            for label, crop, truth in matching_crops(case, crop_rng, (64, 128, 192, 256), args.crops):
                run(f"crops {crop.shape[0]} px", label, case.fixed, crop,
                    lambda t, truth=truth, shape=crop.shape: corner_error(truth, t, shape), case.success_px)
            if args.only_crops:
                continue
            run("raw", case.name, case.fixed, case.moving, case.error, case.success_px)
            run("raw grey", case.name, case.fixed, grey(case.moving), case.error, case.success_px)
        fixed_images = [case.fixed for case in cases]
        mismatched = []
        for _ in range(args.mismatched):
            a, b = rng.choice(len(cases), 2, replace=False)
            mismatched.append((f"{cases[a].name} SHG vs {cases[b].name} H&E", cases[a].fixed,
                               cases[b].moving))
    if args.only_crops:
        fixed_images, mismatched, args.noise = [], [], 0
    for i, (label, image) in enumerate(noise_images(rng, args.noise)):
        run("noise", label, fixed_images[i % len(fixed_images)], image)
    for label, fixed, moving in mismatched[: args.mismatched]:
        run("mismatched", label, fixed, moving)
    if not args.only_crops:
        run("constant", "constant moving", fixed_images[0],
            np.full((256, 256, model.card.modalities[moving_modality].channels), 200, np.uint8))

    print(f"{len(rows)} cases in {time.perf_counter() - started:.0f} s\n")
    print("| group | cases | refused | true successes | reported likely | false positives "
          "| false negatives |")
    print("|---|---|---|---|---|---|---|")
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        scored = [r for r in mine if "likely" in r]
        good = [r for r in scored if r.get("success")]
        bad = [r for r in scored if not r.get("success")]
        print(f"| {group} | {len(mine)} | {len(mine) - len(scored)} | {len(good)} | "
              f"{sum(r['likely'] for r in scored)} | {sum(r['likely'] for r in bad)} of {len(bad)} | "
              f"{sum(not r['likely'] for r in good)} of {len(good)} |")
    scored = [r for r in rows if "likely" in r]
    good = [r for r in scored if r.get("success")]
    bad = [r for r in scored if not r.get("success")]
    print(f"\nall: false-positive rate {sum(r['likely'] for r in bad)}/{len(bad)}, "
          f"false-negative rate {sum(not r['likely'] for r in good)}/{len(good)}")
    if args.csv:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, keys)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
