"""Multimodal BF -> SHG registration benchmark (MultiRegEval protocol), CoMIR vs classic baselines.

For each aligned pair of ../shared/data/bf_shg (split val by default): fixed = central crop of the
SHG, moving = crop of the BF under a random rigid transform; error = mean distance of the 4 patch
corners; success = error <= 2 % of the width; a method that gives up counts as a failure. Scenarios:

- ``30``:    300² crops, angle ~ U(±30°),  |t| <= 20 px
- ``180``:   300² crops, angle ~ U(±180°), |t| <= 20 px
- ``hard``:  256² crops, angle ~ U(±180°), |t| <= 40 px, gamma 0.7-1.4 and Gaussian noise (5 %)
- ``raw``:   the 20 real cases of ../shared/data/bf_shg_raw: the H&E as scanned against its SHG
  (scale 0.88-1.10, a few degrees, up to 58 px), scored as that folder's README says; val and
  train reported apart (the model was trained on the train pairs, aligned). Any rotation searched.

Methods: ``comir`` (CoMIR + global search, the default affine model: the simplest model that fits,
then the final refinement by mutual information on the images), ``comir-no-mi`` (the same without
that final refinement), ``comir-rigid`` and ``comir-similarity`` (that model only), ``comir-c4``
(C4-averaged CoMIRs, 4x the inference), ``comir-sift`` (CoMIR + SIFT/RANSAC), ``mi-all`` (SimpleITK
Mattes MI, rigid, 3 pyramid levels, 3 starts at -0.4/0/+0.4 rad, every pixel), ``mi-similarity``
and ``mi-affine`` (the same with a similarity transform; affine refines the best similarity),
``mi`` (rigid on a random 25 % of the pixels: twice as fast, far fewer successes), ``elastix``
(itk-elastix with its default parameter maps, unchanged: rigid then affine, Mattes MI, 4 levels,
identity start; grey images), ``best-rigid`` (the rigid transform nearest the reference: the floor
of every rigid method on non-rigid cases; raw scenario only), ``raw`` (global search on the raw
images, no CoMIR: a sanity floor), ``zcmir`` (the zcmir peer: POS-GIFT keypoints and square-loss-MI
refinement, affine model; ``pip install zcmir`` and, without a GPU, Mesa's software Vulkan
``mesa-vulkan-drivers``; minutes per pair on a 2-core CPU, so run it on a subset, e.g. ``--methods
zcmir --scenarios 180 --seeds 2``). Each method registers the first case once, untimed, before its
timed runs (one-time costs: thread pools, oneDNN kernels, SimpleITK set-up), and each method runs
in its own process, so no method's memory state slows another's.

Usage::

    python benchmarks/registration.py --split val --seeds 10 --methods comir,comir-sift,mi-all,mi,raw
    python benchmarks/registration.py --scenarios raw \
        --methods comir,comir-rigid,comir-similarity,best-rigid,mi-all,mi-similarity,mi-affine
    python benchmarks/registration.py --scenarios raw --methods comir,elastix,mi-affine
    python benchmarks/registration.py --scenarios raw --methods comir,elastix --rounds 4
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
from napari_comir.core.evaluation import SCENARIOS, raw_cases, rigid_cases  # noqa: E402
from napari_comir.core.registration import register  # noqa: E402
from napari_comir.core.transforms import AffineTransform, corner_error  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)


def _sitk_matrix(transform, model: str) -> AffineTransform:
    """A SimpleITK transform (FIXED physical -> MOVING physical, p_m = A (p_f - c) + c + t) as our
    moving -> fixed AffineTransform (pixel = physical here: unit spacing, zero origin)."""
    import SimpleITK as sitk

    inner = transform.GetNthTransform(0) if hasattr(transform, "GetNthTransform") else transform
    typed = {"rigid": sitk.Euler2DTransform, "similarity": sitk.Similarity2DTransform,
             "affine": sitk.AffineTransform}[model](inner)
    a = np.array(typed.GetMatrix()).reshape(2, 2)
    c, t = np.array(typed.GetCenter()), np.array(typed.GetTranslation())
    fixed_to_moving = np.eye(3)
    fixed_to_moving[:2, :2] = a
    fixed_to_moving[:2, 2] = c + t - a @ c
    return AffineTransform(fixed_to_moving).inverse()


def mutual_information(fixed: np.ndarray, moving: np.ndarray, max_angle: float,
                       sampling: float | None = 0.25, model: str = "rigid") -> AffineTransform:
    """SimpleITK Mattes-MI registration, best of 3 starting angles (the classic baseline).

    ``model``: rigid (Euler2D), similarity (Similarity2D) or affine (the best similarity, then
    an affine refinement from it). ``sampling``: fraction of the pixels, drawn at random, that
    the metric uses; ``None`` uses every pixel (SimpleITK's default).
    """
    import SimpleITK as sitk

    f = sitk.GetImageFromArray(grey(fixed))
    m = sitk.GetImageFromArray(grey(moving))

    def run(initial):
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
        reg.SetInitialTransform(initial, inPlace=False)
        transform = reg.Execute(f, m)
        return reg.GetMetricValue(), transform

    start_model = "rigid" if model == "rigid" else "similarity"
    kind = sitk.Euler2DTransform() if start_model == "rigid" else sitk.Similarity2DTransform()
    best = None
    for start in (-0.4, 0.0, 0.4) if max_angle > 0 else (0.0,):
        initial = sitk.CenteredTransformInitializer(f, m, kind,
                                                    sitk.CenteredTransformInitializerFilter.GEOMETRY)
        initial.SetAngle(start)
        metric, transform = run(initial)
        if best is None or metric < best[0]:
            best = (metric, transform)
    found = _sitk_matrix(best[1], start_model)
    if model != "affine":
        return found
    inverse = found.inverse().matrix_xy  # fixed -> moving, about the origin
    affine = sitk.AffineTransform(2)
    affine.SetMatrix(inverse[:2, :2].ravel().tolist())
    affine.SetTranslation(inverse[:2, 2].tolist())
    return _sitk_matrix(run(affine)[1], "affine")


def elastix_transform(fixed: np.ndarray, moving: np.ndarray) -> AffineTransform:
    """itk-elastix with its default rigid and affine parameter maps, unchanged (the peer a user
    of elastix would run), on the grey images."""
    import itk

    parameters = itk.ParameterObject.New()
    for name in ("rigid", "affine"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(name))
    method = itk.ElastixRegistrationMethod.New(
        itk.image_from_array(np.ascontiguousarray(grey(fixed))),  # copies: a view dies here
        itk.image_from_array(np.ascontiguousarray(grey(moving))),
        parameter_object=parameters, log_to_console=False)
    method.Update()
    # The rigid and affine maps composed, fixed -> moving physical points; with unit spacing and
    # zero origin a physical point is the (x, y) pixel centre. Read off the images of 3 points.
    combined = method.GetCombinationTransform()
    origin, unit_x, unit_y = (np.array(combined.TransformPoint(p)) for p in ((0.0, 0.0), (1.0, 0.0),
                                                                            (0.0, 1.0)))
    fixed_to_moving = np.eye(3)
    fixed_to_moving[:2, 0], fixed_to_moving[:2, 1], fixed_to_moving[:2, 2] = (
        unit_x - origin, unit_y - origin, origin)
    return AffineTransform(fixed_to_moving).inverse()


def best_rigid(truth: AffineTransform, shape) -> AffineTransform:
    """The rigid transform closest to ``truth`` on the moving image's pixel grid (least squares,
    Kabsch): the floor any rigid method meets on a case that is not rigid."""
    rows, cols = np.mgrid[0:shape[0]:8, 0:shape[1]:8]
    source = np.c_[cols.ravel(), rows.ravel()].astype(float)
    target = truth.apply_xy(source)
    sc, tc = source.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((source - sc).T @ (target - tc))
    rotation = (u @ np.diag([1.0, np.sign(np.linalg.det(u @ vt))]) @ vt).T
    return AffineTransform.rigid(np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])),
                                 tuple(tc - rotation @ sc))


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


def run_case(method: str, model, fixed, moving, max_angle: float,
             truth=None) -> tuple[AffineTransform | MatrixTransform | None, float]:
    """The transform a method finds (None when it gives up) and its wall-clock seconds."""
    start = time.perf_counter()
    try:
        transform = _transform(method, model, fixed, moving, max_angle, truth)
    except (RegistrationError, RuntimeError):  # SIFT without enough matches, ITK failures
        transform = None
    return transform, time.perf_counter() - start


def _transform(method: str, model, fixed, moving, max_angle: float, truth=None):
    if method.startswith("comir"):
        # comir (the default: affine, the simplest model that fits), comir-rigid,
        # comir-similarity, comir-c4 (C4-averaged CoMIRs), comir-sift
        model.card.c4_average = method == "comir-c4"
        transform = {"comir-rigid": "rigid", "comir-similarity": "similarity"}.get(method, "affine")
        search = "sift" if method == "comir-sift" else "search"
        final = "none" if method == "comir-no-mi" else "mutual-information"
        return api.register_multimodal(fixed, moving, model, rotation_range=max_angle, method=search,
                                       transform=transform, final_refinement=final).transform
    if method in ("mi", "mi-all", "mi-similarity", "mi-affine"):
        return mutual_information(fixed, moving, max_angle, 0.25 if method == "mi" else None,
                                  {"mi-similarity": "similarity", "mi-affine": "affine"}.get(method, "rigid"))
    if method == "elastix":
        return elastix_transform(fixed, moving)
    if method == "best-rigid":
        return best_rigid(truth, moving.shape)
    if method == "zcmir":
        return zcmir_transform(fixed, moving)
    if method == "raw":
        shg = np.log1p(fixed.astype(np.float32))
        return register(shg, -grey(moving), rotation_range=max_angle).transform
    raise ValueError(method)


def _cases(scenario: str, split: str, seeds: int):
    """(max_angle, success_px, [(split, fixed, moving, error function, truth)]) of a scenario."""
    if scenario == "raw":  # every raw case; split says which split a row belongs to
        cases = raw_cases(DATA.parent / "bf_shg_raw")
        return 180.0, [(c.split, c.fixed, c.moving, c.error, c.success_px, c.truth) for c in cases]
    spec = SCENARIOS[scenario]
    pairs = read_pairs_csv(DATA / "pairs.csv", ("bf", "shg"), split=split)
    return spec.max_angle, [
        (split, c.fixed, c.moving, lambda t, c=c: corner_error(c.truth, t, c.moving.shape[:2]),
         spec.success_px, c.truth) for c in rigid_cases(pairs, spec, seeds)]


def method_results(method: str, model_name: str, split: str, seeds: int,
                   scenarios: list[str]) -> dict[str, list[tuple[str, float, bool, float]]]:
    """(split, corner error, success, seconds) of one method on every case of each scenario."""
    model = api.load_model(model_name, "cpu")
    results = {}
    for scenario in scenarios:
        max_angle, cases = _cases(scenario, split, seeds)
        _, fixed, moving, *_, truth = cases[0]
        run_case(method, model, fixed, moving, max_angle, truth)  # warm-up, untimed
        rows = []
        for case_split, fixed, moving, error, success_px, truth in cases:
            found, sec = run_case(method, model, fixed, moving, max_angle, truth)
            err = np.inf if found is None else error(found)
            rows.append((case_split, err, err <= success_px, sec))
        results[scenario] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bf-shg")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--methods", default="comir,comir-sift,mi-all,mi,raw")
    parser.add_argument("--scenarios", default="30,180,hard")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the methods this many times, every other round in reverse "
                        "order: on a machine whose speed drifts, seconds compare within a round")
    args = parser.parse_args()
    methods, scenarios = args.methods.split(","), args.scenarios.split(",")
    n_pairs = len(read_pairs_csv(DATA / "pairs.csv", ("bf", "shg"), split=args.split))
    print(f"model {args.model}, {args.split} split: {n_pairs} pairs x {args.seeds} seeds", flush=True)
    rounds = []
    for number in range(args.rounds):
        results = {}
        for method in methods if number % 2 == 0 else methods[::-1]:
            # Each method in a fresh process: in one process, CoMIR registrations after a single
            # SimpleITK MI call ran ~25 % slower (the allocator's state), which is no property of
            # either.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as worker:
                results[method] = worker.submit(method_results, method, args.model, args.split,
                                                args.seeds, scenarios).result()
        rounds.append(results)
    if args.rounds > 1:
        print("mean s / case by round (the order reversed every other round)")
        for scenario in scenarios:
            for method in methods:
                seconds = [np.mean([r[3] for r in results[method][scenario]]) for results in rounds]
                print(f"{scenario:11s} {method:17s} " + " ".join(f"{s:7.3f}" for s in seconds))
    # errors from the first round (the methods are deterministic), seconds from every round
    results = {method: {scenario: [(*row[:3], np.mean([r[method][scenario][i][3] for r in rounds]))
                                   for i, row in enumerate(rounds[0][method][scenario])]
                        for scenario in scenarios} for method in methods}
    print(f"{'scenario':11s} {'method':17s} {'cases':>5s} {'success %':>9s} {'median px':>9s} {'mean s':>7s}")
    for scenario in scenarios:
        for method in methods:
            rows = results[method][scenario]
            groups = [("", rows)]
            if scenario == "raw":  # val and train apart, then all
                groups = [(f" {part}", [r for r in rows if r[0] == part]) for part in ("val", "train")]
                groups.append((" all", rows))
            for label, part in groups:
                errors = np.array([r[1] for r in part])
                success = 100 * np.mean([r[2] for r in part])
                seconds = np.mean([r[3] for r in part])
                print(f"{scenario + label:11s} {method:17s} {len(part):5d} {success:9.1f} "
                      f"{np.median(errors):9.2f} {seconds:7.3f}", flush=True)


if __name__ == "__main__":
    main()
