"""Multimodal BF -> SHG registration benchmark (MultiRegEval protocol), CoMIR vs classic baselines.

For each aligned pair of ../shared/data/bf_shg (split val by default): fixed = central crop of the
SHG, moving = crop of the BF under a random rigid transform; error = mean distance of the 4 patch
corners; success = error <= 2 % of the width; a method that gives up counts as a failure. Scenarios:

- ``30``:    300² crops, angle ~ U(±30°),  |t| <= 20 px
- ``180``:   300² crops, angle ~ U(±180°), |t| <= 20 px
- ``hard``:  256² crops, angle ~ U(±180°), |t| <= 40 px, gamma 0.7-1.4 and Gaussian noise (5 %)

Methods: ``comir`` (CoMIR + global search), ``comir-c4`` (the same with C4-averaged CoMIRs,
4x the inference), ``comir-sift`` (CoMIR + SIFT/RANSAC), ``mi-all`` (SimpleITK Mattes MI, rigid,
3 pyramid levels, 3 starts at -0.4/0/+0.4 rad, every pixel), ``mi`` (the same on a random 25 % of
the pixels: twice as fast, far fewer successes), ``raw`` (global
search on the raw images, no CoMIR: a sanity floor), ``zcmir`` (the zcmir peer: POS-GIFT keypoints
and square-loss-MI refinement, affine model; ``pip install zcmir`` and, without a GPU, Mesa's
software Vulkan ``mesa-vulkan-drivers``; minutes per pair on a 2-core CPU, so run it on a subset,
e.g. ``--methods zcmir --scenarios 180 --seeds 2``). Each method registers the first case once,
untimed, before its timed runs (one-time costs: thread pools, oneDNN kernels, SimpleITK set-up),
and each method runs in its own process, so no method's memory state slows another's.

Usage::

    python benchmarks/registration.py --split val --seeds 10 --methods comir,comir-sift,mi-all,mi,raw
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir import api  # noqa: E402
from napari_comir.core.data import read_pairs_csv  # noqa: E402
from napari_comir.core.errors import RegistrationError  # noqa: E402
from napari_comir.core.evaluation import SCENARIOS, rigid_cases  # noqa: E402
from napari_comir.core.registration import register  # noqa: E402
from napari_comir.core.transforms import AffineTransform, corner_error  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)


def mutual_information(fixed: np.ndarray, moving: np.ndarray, max_angle: float,
                       sampling: float | None = 0.25) -> AffineTransform:
    """SimpleITK Mattes-MI rigid registration, best of 3 starting angles (the classic baseline).

    ``sampling``: fraction of the pixels, drawn at random, that the metric uses; ``None`` uses
    every pixel (SimpleITK's default).
    """
    import SimpleITK as sitk

    f = sitk.GetImageFromArray(grey(fixed))
    m = sitk.GetImageFromArray(grey(moving))
    best = None
    for start in (-0.4, 0.0, 0.4) if max_angle > 0 else (0.0,):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(32)
        if sampling is not None:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(sampling, seed=1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.7)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([2, 1, 0])
        initial = sitk.CenteredTransformInitializer(f, m, sitk.Euler2DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.GEOMETRY)
        initial.SetAngle(start)
        reg.SetInitialTransform(initial, inPlace=False)
        transform = reg.Execute(f, m)
        metric = reg.GetMetricValue()
        if best is None or metric < best[0]:
            best = (metric, transform)
    euler = sitk.Euler2DTransform(best[1].GetNthTransform(0) if hasattr(best[1], "GetNthTransform")
                                  else best[1])
    # SimpleITK maps FIXED physical points to MOVING ones: p_m = R (p_f - c) + c + t; invert it.
    angle, (cx, cy), (tx, ty) = euler.GetAngle(), euler.GetCenter(), euler.GetTranslation()
    fixed_to_moving = AffineTransform.about_center(np.degrees(angle), (cx, cy), (tx, ty))
    return fixed_to_moving.inverse()


class MatrixTransform:
    """A 3x3 moving (x, y) -> fixed (x, y) matrix, 0-based pixel centres (affine or projective)."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix

    def apply_xy(self, points: np.ndarray) -> np.ndarray:
        mapped = np.c_[points, np.ones(len(points))] @ self.matrix.T
        return mapped[:, :2] / mapped[:, 2:]


def zcmir_transform(fixed: np.ndarray, moving: np.ndarray) -> MatrixTransform:
    """The zcmir peer with an affine model (it has no rigid one)."""
    import zcmir

    def as_uint8(image):  # zcmir rejects float images
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    result = zcmir.register(as_uint8(moving), as_uint8(fixed), model="affine")
    one_based = np.array([[1.0, 0, 1], [0, 1, 1], [0, 0, 1]])  # zcmir's H uses 1-based pixels
    return MatrixTransform(np.linalg.inv(one_based) @ result.H @ one_based)


def run_case(method: str, model, fixed, moving,
             max_angle: float) -> tuple[AffineTransform | MatrixTransform | None, float]:
    """The transform a method finds (None when it gives up) and its wall-clock seconds."""
    start = time.perf_counter()
    try:
        transform = _transform(method, model, fixed, moving, max_angle)
    except (RegistrationError, RuntimeError):  # SIFT without enough matches, ITK failures
        transform = None
    return transform, time.perf_counter() - start


def _transform(method: str, model, fixed, moving, max_angle: float) -> AffineTransform | MatrixTransform:
    if method in ("comir", "comir-c4"):
        model.card.c4_average = method == "comir-c4"
        transform = api.register_multimodal(fixed, moving, model, rotation_range=max_angle).transform
    elif method == "comir-sift":
        model.card.c4_average = False
        transform = api.register_multimodal(fixed, moving, model, method="sift").transform
    elif method in ("mi", "mi-all"):
        transform = mutual_information(fixed, moving, max_angle, None if method == "mi-all" else 0.25)
    elif method == "zcmir":
        transform = zcmir_transform(fixed, moving)
    elif method == "raw":
        shg = np.log1p(fixed.astype(np.float32))
        transform = register(shg, -grey(moving), rotation_range=max_angle).transform
    else:
        raise ValueError(method)
    return transform


def method_results(method: str, model_name: str, split: str, seeds: int,
                   scenarios: list[str]) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Corner errors and seconds of one method on every case of each scenario."""
    model = api.load_model(model_name, "cpu")
    pairs = read_pairs_csv(DATA / "pairs.csv", ("bf", "shg"), split=split)
    results = {}
    for scenario in scenarios:
        spec = SCENARIOS[scenario]
        cases = list(rigid_cases(pairs, spec, seeds))
        run_case(method, model, cases[0].fixed, cases[0].moving, spec.max_angle)  # warm-up, untimed
        errors, seconds = [], []
        for case in cases:
            found, sec = run_case(method, model, case.fixed, case.moving, spec.max_angle)
            errors.append(np.inf if found is None else corner_error(case.truth, found, case.moving.shape[:2]))
            seconds.append(sec)
        results[scenario] = np.array(errors), seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bf-shg")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--methods", default="comir,comir-sift,mi-all,mi,raw")
    parser.add_argument("--scenarios", default="30,180,hard")
    args = parser.parse_args()
    methods, scenarios = args.methods.split(","), args.scenarios.split(",")
    n_pairs = len(read_pairs_csv(DATA / "pairs.csv", ("bf", "shg"), split=args.split))
    print(f"model {args.model}, {args.split} split: {n_pairs} pairs x {args.seeds} seeds", flush=True)
    results = {}
    for method in methods:
        # Each method in a fresh process: in one process, CoMIR registrations after a single
        # SimpleITK MI call ran ~25 % slower (the allocator's state), which is no property of either.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as worker:
            results[method] = worker.submit(method_results, method, args.model, args.split,
                                            args.seeds, scenarios).result()
    print(f"{'scenario':9s} {'method':11s} {'success %':>9s} {'median px':>9s} {'mean s':>7s}")
    for scenario in scenarios:
        spec = SCENARIOS[scenario]
        for method in methods:
            errors, seconds = results[method][scenario]
            success = 100 * np.mean(errors <= spec.success_px)
            print(f"{scenario:9s} {method:11s} {success:9.1f} {np.median(errors):9.2f} "
                  f"{np.mean(seconds):7.3f}")


if __name__ == "__main__":
    main()
