"""Teaching a new modality pair from one pair, measured, beside itk-elastix's default affine.

Three settings, each taught on one pair aligned by landmarks and scored on pairs held out:

- ``he_ihc``: H&E (fixed) against IHC (moving), serial sections of one lung block. Taught on one
  pair (its 80 manual landmarks), the other three registered; or (``--he-ihc-taught 2``) taught
  on every two at once, the other two registered; or (``--he-ihc-taught 3``) on three, the
  fourth registered. Scored by the mean TRE
  on their landmarks against the best affine map's (registered: within 1.3x) and ANHIR's rTRE
  (TRE / the fixed image's diagonal; the median over a pair's landmarks).
- ``grey``: the raw BF/SHG cases with the bright field in grey. ``bf-shg`` taught on one case
  (five clicks: the reference transform plus 2 px of noise per click; its grey route alone, the
  palette, learns), every case registered again, grey and colour (registered: within 2 % of the
  width, as the shared data scores them).
- ``aerial``: the RGB/NIR scene. A new model taught on its left half (five clicks, 2 px noise),
  scored on random similarity transforms (±30°, scale 0.9-1.1, ±20 px) of crops of its right half.

Beside each: the model before teaching (untaught) and itk-elastix with its default rigid then
affine parameter maps (Mattes mutual information) on the grey images, the same data.

Usage: ``python benchmarks/teach.py [--settings he_ihc grey aerial] [--seconds 120]``
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir import api  # noqa: E402
from napari_comir.core.evaluation import raw_cases  # noqa: E402
from napari_comir.core.grey_route import grey_routes  # noqa: E402
from napari_comir.core.io.landmarks import read_landmarks  # noqa: E402
from napari_comir.core.teaching import (  # noqa: E402
    START_MODEL,
    TeachingPair,
    starting_model,
    teach_config,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Recipe variants from the command line: ``--freeze-fixed`` (the fixed network stays as it
#: started), ``--steps`` (a fixed number of steps instead of the time budget: on a
#: loaded machine, recipes are compared at equal steps), ``--hue``/``--shift`` (augmentations),
#: ``--critic`` (the loss's critic while teaching), ``--no-elastix``, and ``--quick`` (neither
#: itk-elastix nor the old model: recipe screening).
VARIANT = {"freeze_fixed": False, "steps": None, "hue_degrees": None, "shift_px": None,
           "quick": False, "elastix": True, "critic": None}
CLICKS_XY = np.array([[0.18, 0.2], [0.82, 0.21], [0.78, 0.82], [0.2, 0.78], [0.5, 0.49]])


def grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image @ np.array([0.299, 0.587, 0.114], np.float32) if image.ndim == 3 else image


def elastix_affine(fixed: np.ndarray, moving: np.ndarray) -> api.AffineTransform:
    """itk-elastix with its default rigid and affine parameter maps, as moving -> fixed (x, y)."""
    import itk

    fixed_itk = itk.GetImageFromArray(np.ascontiguousarray(grey(fixed)))
    moving_itk = itk.GetImageFromArray(np.ascontiguousarray(grey(moving)))
    parameters = itk.ParameterObject.New()
    for kind in ("rigid", "affine"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(kind))
    _, found = itk.elastix_registration_method(fixed_itk, moving_itk, parameter_object=parameters,
                                               log_to_console=False)
    # elastix maps fixed points to moving ones (unit spacing: pixels (x, y)); its displacement
    # field sampled on a grid gives that affine map exactly, inverted by the fit below.
    with tempfile.TemporaryDirectory() as folder:  # transformix writes its field file there
        field = itk.GetArrayFromImage(itk.transformix_deformation_field(
            moving_itk, found, output_directory=folder))
    rows, cols = np.mgrid[0:fixed.shape[0]:16, 0:fixed.shape[1]:16]
    grid_xy = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(float)
    transform, _ = api.fit_landmarks(grid_xy, grid_xy + field[rows.ravel(), cols.ravel()], "affine")
    return transform


def clicked_pair(fixed, moving, truth, rng, name) -> TeachingPair:
    """A pair aligned by five clicks: ``truth`` (moving -> fixed) plus 2 px of noise per click."""
    rows, cols = moving.shape[:2]
    moving_xy = CLICKS_XY * [cols, rows]
    fixed_xy = truth.apply_xy(moving_xy) + rng.normal(0, 2.0, moving_xy.shape)
    pair = TeachingPair.from_landmarks(fixed, moving, fixed_xy, moving_xy, name=name)
    pair.fixed_points_xy = pair.moving_points_xy = None  # scored against the truth instead
    return pair


def scored(pair: TeachingPair, transform, likely, seconds: float, detail=None) -> dict:
    """A registration's error, success, verdict and detail score; ANHIR's rTRE where the pair
    has landmarks."""
    row = {"error": pair.error(transform), "registered": pair.registered(transform),
           "likely": likely, "seconds": seconds, "detail": detail}
    if pair.fixed_points_xy is not None:
        distances = np.linalg.norm(transform.apply_xy(pair.moving_points_xy) - pair.fixed_points_xy,
                                   axis=1)
        row["rtre"] = float(np.median(distances) / np.hypot(*pair.fixed_image.shape[:2]))
    return row


def teach_and_check(pairs, check, seconds, seed, **options) -> list[dict]:
    """Teach with :func:`api.teach` and check on ``check``: one row per check pair, with the
    taught model, the old one and itk-elastix scored."""
    start = options.get("start")
    fixed_modality = (api.load_model(start, "cpu").card.fixed_modality if start
                      else options.get("fixed_modality", "fixed"))
    config = teach_config(seconds, new_pair=start is None, seed=seed, device="cpu",
                          frozen_modality=fixed_modality if VARIANT["freeze_fixed"] else None,
                          grey_route=bool(start) and bool(grey_routes(api.load_model(start, "cpu").card,
                                                                      pairs)))
    if VARIANT["steps"]:
        config.steps, config.max_seconds = VARIANT["steps"], None
    for name in ("hue_degrees", "shift_px"):
        if VARIANT[name] is not None:
            setattr(config, name, VARIANT[name])
    if VARIANT["quick"]:
        options["old"] = None
    if VARIANT["critic"] and start:  # the critic only shapes training; the verdict is the card's
        options["start"] = api.load_model(start, "cpu")
        options["start"].card.critic = VARIANT["critic"]
    *_, last = api.teach(pairs, check_pairs=check, seed=seed, device="cpu", config=config, **options)
    outcome = last.result
    rows = []
    methods = (("taught",) + (() if VARIANT["quick"] else ("old",))
               + (("elastix",) if VARIANT["elastix"] else ()))
    for pair, result in zip(check, outcome.checks, strict=True):
        row = {"pair": pair.name, "taught_on": "+".join(p.name for p in pairs),
               "teach_seconds": outcome.seconds, "steps": outcome.steps,
               "best": pair.error(pair.transform) if pair.fixed_points_xy is not None else None,
               "taught": scored(pair, result.new_result.transform, result.new_result.success_likely,
                                result.new_result.seconds, result.new_result.detail_score)}
        if "old" in methods:
            row["old"] = scored(pair, result.old_result.transform, result.old_result.success_likely,
                                result.old_result.seconds, result.old_result.detail_score)
        if "elastix" in methods:
            start = time.perf_counter()
            found = elastix_affine(pair.fixed_image, pair.moving_image)
            row["elastix"] = scored(pair, found, None, time.perf_counter() - start)
        rows.append(row)
        print(f"taught on {row['taught_on']}, {pair.name}: "
              + "; ".join(f"{m} {row[m]['error']:.1f} px (registered {row[m]['registered']}, "
                          f"likely {row[m]['likely']}"
                          + (f", detail {row[m]['detail']:.2f}" if row[m]["detail"] is not None else "")
                          + ")" for m in methods)
              + (f"; best affine {row['best']:.1f} px" if row["best"] else ""), flush=True)
    calibration = outcome.model.card.metrics["detail_threshold"]
    print(f"taught on {rows[-1]['taught_on']}: {outcome.steps} steps in {outcome.seconds:.0f} s; "
          f"detail threshold {outcome.model.card.detail_threshold:.2f} (garbage "
          f"{calibration['null_scores']}); {outcome.reason}", flush=True)
    return rows


def he_ihc(seconds: float, seed: int, taught_count: int = 1) -> list[dict]:
    folder = DATA / "he_ihc"
    with open(folder / "pairs.csv", newline="", encoding="utf-8") as handle:
        listed = list(csv.DictReader(handle))
    pairs = [TeachingPair.from_landmarks(
        api.read_image(folder / row["fixed_image"]), api.read_image(folder / row["moving_image"]),
        read_landmarks(folder / row["fixed_landmarks"]), read_landmarks(folder / row["moving_landmarks"]),
        name=row["pair_id"].rsplit("_", 1)[-1]) for row in listed]
    untaught = starting_model(3, 3, api.load_model(START_MODEL, "cpu"))
    rows = []
    for taught in itertools.combinations(pairs, taught_count):  # the others checked
        check = [pair for pair in pairs if all(pair is not t for t in taught)]
        rows += teach_and_check(list(taught), check, seconds, seed, old=untaught)
    return rows


def grey_raw(seconds: float, seed: int, teach_on: list[str]) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = raw_cases(DATA / "bf_shg_raw")
    grey_cases = [TeachingPair(case.fixed, grey(case.moving).astype(np.uint8), case.truth,
                               name=f"{case.name} grey") for case in cases]
    colour_cases = [TeachingPair(case.fixed, case.moving, case.truth, name=f"{case.name} colour")
                    for case in cases]
    taught = [pair for name in teach_on for pair in grey_cases if pair.name == f"{name} grey"]
    pairs = [clicked_pair(pair.fixed_image, pair.moving_image, pair.transform, rng, pair.name)
             for pair in taught]
    return teach_and_check(pairs, grey_cases + colour_cases, seconds, seed, start="bf-shg")


def aerial(seconds: float, seed: int, cases: int = 10) -> list[dict]:
    rng = np.random.default_rng(seed)
    rgb = api.read_image(DATA / "zurich" / "zh17_RGB.tif")
    nir = api.read_image(DATA / "zurich" / "zh17_NIR.tif")
    half = rgb.shape[1] // 2
    identity = api.AffineTransform.similarity(0.0, 1.0)
    taught = clicked_pair(nir[:, :half], rgb[:, :half], identity, rng, "left half")
    check, side = [], 384
    for index in range(cases):
        top = int(rng.integers(0, nir.shape[0] - side))
        left = half + int(rng.integers(0, nir.shape[1] - half - side))
        # ±30°: within elastix's reach (it searches no rotations; CoMIRs' global search does)
        angle, scale = float(rng.uniform(-30, 30)), float(rng.uniform(0.9, 1.1))
        centre = np.array([side / 2, side / 2])  # turned about the crop's centre, then shifted
        to_fixed = api.AffineTransform.similarity(0.0, 1.0, centre + rng.uniform(-20, 20, 2)).compose(
            api.AffineTransform.similarity(angle, scale).compose(
                api.AffineTransform.similarity(0.0, 1.0, -centre)))
        moving = api.resample(rgb[top:top + side, left:left + side], to_fixed.inverse(), (side, side))
        check.append(TeachingPair(nir[top:top + side, left:left + side], moving.astype(rgb.dtype),
                                  to_fixed, name=f"crop {index}"))
    return teach_and_check([taught], check, seconds, seed, old="rgb-nir",
                           fixed_modality="nir", moving_modality="rgb")


def summary(name: str, rows: list[dict], methods=("taught", "old", "elastix")) -> None:
    for method in methods:
        rows_m = [row[method] for row in rows if row.get(method)]
        if not rows_m:
            continue
        registered = sum(r["registered"] for r in rows_m)
        false_likely = sum(bool(r["likely"]) and not r["registered"] for r in rows_m)
        true_likely = sum(bool(r["likely"]) and r["registered"] for r in rows_m)
        line = (f"{name:14s} {method:8s} registered {registered}/{len(rows_m)}, median error "
                f"{np.median([r['error'] for r in rows_m]):.1f} px, failures called likely "
                f"{false_likely}, successes called likely {true_likely}/{registered}, "
                f"{np.mean([r['seconds'] for r in rows_m]):.2f} s per pair")
        if rows[0]["best"]:
            ratios = [row[method]["error"] / row["best"] for row in rows]
            line += (f", ratio to best affine median {np.median(ratios):.2f} max {max(ratios):.2f}, "
                     f"median rTRE {np.median([row[method]['rtre'] for row in rows]):.4f}")
        print(line)
    seconds = sorted({row["teach_seconds"] for row in rows})
    print(f"{name:14s} teaching: {', '.join(f'{s:.0f}' for s in seconds)} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=["he_ihc", "grey", "aerial"],
                        choices=["he_ihc", "grey", "aerial"])
    parser.add_argument("--seconds", type=float, default=120.0, help="teaching budget (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teach-on", nargs="+", default=["1B_D2"],
                        help="the raw case(s) taught (grey)")
    parser.add_argument("--he-ihc-taught", type=int, default=1, choices=[1, 2, 3],
                        help="he_ihc pairs taught at once (every such choice; the others checked)")
    parser.add_argument("--freeze-fixed", action="store_true",
                        help="the fixed network stays as it started (a new pair's: the "
                        "bright-field one); only the moving one learns (the recipe trains both)")
    parser.add_argument("--steps", type=int, help="train this many steps, not for --seconds")
    parser.add_argument("--hue", type=float, help="hue augmentation, degrees (default: the recipe's)")
    parser.add_argument("--shift", type=float, help="shift augmentation, px (default: the recipe's)")
    parser.add_argument("--quick", action="store_true",
                        help="the taught model only: no itk-elastix, no old model")
    parser.add_argument("--no-elastix", action="store_true", help="leave itk-elastix out")
    parser.add_argument("--critic", choices=["mse", "cosine"],
                        help="the loss's critic while teaching a --from model (default: its card's)")
    args = parser.parse_args()
    VARIANT.update(freeze_fixed=args.freeze_fixed, steps=args.steps, hue_degrees=args.hue,
                   shift_px=args.shift, quick=args.quick, elastix=not (args.quick or args.no_elastix),
                   critic=args.critic)
    results = {}
    if "he_ihc" in args.settings:
        results["he_ihc"] = he_ihc(args.seconds, args.seed, args.he_ihc_taught)
    if "grey" in args.settings:
        rows = grey_raw(args.seconds, args.seed, args.teach_on)
        results["grey raw"] = [row for row in rows if row["pair"].endswith("grey")]
        results["colour raw"] = [row for row in rows if row["pair"].endswith("colour")]
    if "aerial" in args.settings:
        results["aerial"] = aerial(args.seconds, args.seed)
    for name, rows in results.items():
        summary(name, rows)


if __name__ == "__main__":
    main()
