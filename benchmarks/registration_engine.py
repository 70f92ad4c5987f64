"""Speed and accuracy of ``register`` on SHG vs a rigidly transformed copy of the same SHG.

For every pair in ``shared/data/bf_shg`` and a few seeds: fixed = central crop of the SHG
(log1p, normalised to [0, 1]); moving = central crop of the SHG warped by a random rotation in
±180° and translation. Two scenarios: 300² crops with |t| <= 20 px, and 256² crops with
|t| <= 40 px plus a gamma change and Gaussian noise on the moving image. A random unrelated pair
(crops of two different SHG images) measures the scores of failures.

Usage: ``python benchmarks/registration_engine.py [--seeds 3] [--method search] [--device cpu]``
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_comir.core.registration import SCORE_THRESHOLD, register
from napari_comir.core.resampling import resample
from napari_comir.core.transforms import AffineTransform, corner_error

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"


def load_shg(name: str) -> np.ndarray:
    """SHG image as float in [0, 1] after log1p (SHG is sparse and heavy-tailed)."""
    img = np.log1p(tifffile.imread(DATA / f"{name}_SHG.tif").astype(np.float64))
    return img / max(img.max(), 1e-12)


def make_pair(full, angle_deg, shift_xy, crop):
    """Return (fixed, moving, true moving -> fixed transform) for central ``crop`` x ``crop`` crops.

    The full image is warped by ``A`` (rotation about its centre, then ``shift_xy``). Moving pixel
    ``p`` is full-warped pixel ``p + o``, i.e. original pixel ``A^-1 (p + o)``, i.e. fixed pixel
    ``A^-1 (p + o) - o``.
    """
    h, w = full.shape
    a = AffineTransform.about_center(angle_deg, ((w - 1) / 2, (h - 1) / 2), shift_xy)
    warped = resample(full, a, full.shape, order=3)
    o = (h - crop) // 2
    shift = AffineTransform.rigid(0.0, (o, o))
    true = shift.inverse().compose(a.inverse()).compose(shift)
    return full[o : o + crop, o : o + crop], warped[o : o + crop, o : o + crop], true


def degrade(img, rng, gamma_range=(0.6, 1.6), noise_std=0.05):
    """Random gamma change and additive Gaussian noise (std relative to the image range)."""
    gamma = rng.uniform(*gamma_range)
    out = np.clip(img, 0, None) ** gamma
    return out + rng.normal(0.0, noise_std * float(np.ptp(out)), out.shape)


def run(names, seeds, crop, max_shift, noisy, method, device):
    """Register every (name, seed) case; rows of (name, seed, error_px, score, wall s, CPU s)."""
    rows = []
    for name in names:
        full = load_shg(name)
        for seed in range(seeds):
            rng = np.random.default_rng(1000 * seed + crop)
            angle = rng.uniform(-180, 180)
            r, phi = max_shift * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            fixed, moving, true = make_pair(full, angle, (r * np.cos(phi), r * np.sin(phi)), crop)
            if noisy:
                moving = degrade(moving, rng)
            cpu = time.process_time()
            res = register(fixed, moving, method=method, device=device)
            cpu = time.process_time() - cpu
            rows.append(
                (
                    name,
                    seed,
                    corner_error(true, res.transform, moving.shape),
                    res.score,
                    res.seconds,
                    cpu,
                )
            )
    return rows


def unrelated_scores(names, crop, method, device):
    """Scores of registering crops of two different SHG images (should all be failures)."""
    scores = []
    for offset in (1, 7):
        for a, b in zip(names, names[offset:] + names[:offset], strict=True):
            fixed, _, _ = make_pair(load_shg(a), 0.0, (0, 0), crop)
            moving, _, _ = make_pair(load_shg(b), 30.0 * offset, (0, 0), crop)
            scores.append(register(fixed, moving, method=method, device=device).score)
    return np.array(scores)


def summarise(label, rows, crop):
    """Print the success rate, error percentiles, score range and timing of one scenario."""
    err = np.array([r[2] for r in rows])
    score = np.array([r[3] for r in rows])
    sec = np.array([r[4] for r in rows])
    cpu = np.array([r[5] for r in rows])
    ok = err <= 0.02 * crop
    print(
        f"{label}: n={len(rows)} success={ok.mean():.1%} median_err={np.median(err):.3f}px "
        f"p90_err={np.percentile(err, 90):.3f}px max_err={err.max():.2f}px"
    )
    if ok.any():
        print(f"  score of successes: min={score[ok].min():.3f} median={np.median(score[ok]):.3f}")
    if (~ok).any():
        failed = [
            (r[0], r[1], round(r[2], 1), round(r[3], 3))
            for r, k in zip(rows, ok, strict=True)
            if not k
        ]
        print(f"  failures (name, seed, error px, score): {failed}")
    print(
        f"  time: median={np.median(sec) * 1e3:.0f}ms p90={np.percentile(sec, 90) * 1e3:.0f}ms "
        f"max={sec.max() * 1e3:.0f}ms; CPU time median={np.median(cpu) * 1e3:.0f}ms; "
        f"success_likely on successes={np.mean(score[ok] >= SCORE_THRESHOLD):.1%}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--method", default="search", choices=("search", "sift"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with open(DATA / "pairs.csv", newline="") as fh:
        names = [row["name"] for row in csv.DictReader(fh)]
    # Warm-up (torch allocations, FFT plans) so the first timing is not an outlier.
    fixed, moving, _ = make_pair(load_shg(names[0]), 10.0, (3, 4), 300)
    register(fixed, moving, method=args.method, device=args.device)
    t0 = time.perf_counter()
    summarise(
        "300² ±180° |t|<=20", run(names, args.seeds, 300, 20, False, args.method, args.device), 300
    )
    summarise(
        "256² ±180° |t|<=40 gamma+noise",
        run(names, args.seeds, 256, 40, True, args.method, args.device),
        256,
    )
    bad = unrelated_scores(names, 300, args.method, args.device)
    print(
        f"unrelated pairs: max score={bad.max():.3f} median={np.median(bad):.3f} "
        f"(threshold {SCORE_THRESHOLD}); "
        f"flagged success_likely: {(bad >= SCORE_THRESHOLD).sum()}/{len(bad)}"
    )
    print(f"total {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
