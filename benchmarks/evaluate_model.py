"""Validation metrics of a bundled-style model, written into its model card (docs/models.md quotes them).

- equivariance: correlation of f(rotated input) rotated back vs f(input), angles 0-345° in 15°
  steps, on the val images of both modalities (min and mean over angles, mean over images);
- registration success on the val split (CoMIR + global search), scenarios 180 and hard of
  benchmarks/registration.py, 10 seeds per pair.

bf-shg models are scored on the val pairs of shared/data/bf_shg; rgb-nir models on the four
512² corners of the one Zurich scene (which the model was trained on: the paper's one-pair
setting has no held-out scene).

Usage: ``python benchmarks/evaluate_model.py bf-shg [--update-card] [--seeds 10]``
(or ``rgb-nir``, or a model file path)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir import api  # noqa: E402
from napari_comir.core.data import AlignedPair, read_pairs_csv  # noqa: E402
from napari_comir.core.errors import RegistrationError  # noqa: E402
from napari_comir.core.evaluation import SCENARIOS, equivariance_score, rigid_cases  # noqa: E402
from napari_comir.core.io import read_image, write_text_atomic  # noqa: E402
from napari_comir.core.transforms import corner_error  # noqa: E402
from napari_comir.core.zoo import resolve_model_path  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def evaluation_pairs(model, data: Path = SHARED) -> list[AlignedPair]:
    if set(model.modalities) == {"bf", "shg"}:
        return read_pairs_csv(data / "bf_shg" / "pairs.csv", ("bf", "shg"), split="val")
    rgb, nir = (read_image(data / "zurich" / f"zh17_{m}.tif") for m in ("RGB", "NIR"))
    corners = [(r, c) for r in (0, rgb.shape[0] - 512) for c in (0, rgb.shape[1] - 512)]
    return [AlignedPair({"rgb": rgb[r:r + 512, c:c + 512], "nir": nir[r:r + 512, c:c + 512]},
                        name=f"zh17 corner {r},{c}") for r, c in corners]


def registration_success(model, pairs, seeds: int, scenarios=("180", "hard"), verbose: bool = True) -> dict:
    """Success %, median corner error (px) and case count of CoMIR + search per scenario."""
    fixed_modality, moving_modality = model.card.fixed_modality, model.card.moving_modality
    results = {}
    for scenario in scenarios:
        errors = np.array([
            _case_error(case, model)
            for case in rigid_cases(pairs, SCENARIOS[scenario], seeds, fixed_modality, moving_modality)])
        success = errors <= SCENARIOS[scenario].success_px
        results[scenario] = {"success_pct": round(float(100 * np.mean(success)), 1),
                             "median_error_px": round(float(np.median(errors)), 3),
                             "cases": int(errors.size)}
        if verbose:
            print(scenario, results[scenario], flush=True)
    return results


def _case_error(case, model) -> float:
    """Corner error of CoMIR + search on one case; infinite where the engine finds nothing to
    compare (a barely trained model's flat CoMIRs)."""
    try:
        found = api.register_multimodal(case.fixed, case.moving, model).transform
    except RegistrationError:
        return float("inf")
    return corner_error(case.truth, found, case.moving.shape[:2])


def equivariance(model, pairs) -> dict:
    results = {}
    for modality in model.modalities:
        per_image = [equivariance_score(model, pair.images[modality], modality) for pair in pairs]
        by_angle = {a: float(np.mean([s[a] for s in per_image])) for a in per_image[0]}
        results[modality] = {"min": round(min(by_angle.values()), 4),
                             "mean": round(float(np.mean(list(by_angle.values()))), 4),
                             "worst_angle_deg": min(by_angle, key=by_angle.get)}
        print("equivariance", modality, results[modality], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--update-card", action="store_true")
    parser.add_argument("--c4-average", action="store_true",
                        help="measure with C4-averaged inference (4x compute) instead of the card's mode")
    parser.add_argument("--scenarios", default="180,hard", help="of core.evaluation.SCENARIOS")
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding bf_shg/ and zurich/")
    parser.add_argument("--device", default="cpu", help="cpu (the card's numbers), cuda for quick screening")
    args = parser.parse_args()
    if args.update_card and args.device != "cpu":
        parser.error("--update-card records CPU numbers (CUDA inference runs in half precision)")
    model = api.load_model(args.model, args.device)
    model.card.c4_average = model.card.c4_average or args.c4_average
    val = evaluation_pairs(model, args.data)
    metrics = {"val_equivariance": equivariance(model, val),
               "val_registration": registration_success(model, val, args.seeds, args.scenarios.split(","))}
    if args.update_card and not args.c4_average:
        card_path = resolve_model_path(args.model)
        card = json.loads(card_path.read_text())
        card["metrics"] = metrics
        write_text_atomic(card_path, json.dumps(card, indent=2) + "\n")
        print(f"updated {card_path}")


if __name__ == "__main__":
    main()
