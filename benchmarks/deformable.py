"""Deformable refinement benchmark: landmark TRE on real serial sections, field error on known
smooth deformations, and seconds / peak memory by image size, beside itk-elastix.

Sections (``--sections``, comma separated):

- ``he_ihc``: the 4 H&E-vs-IHC serial-section pairs of ../shared/data/he_ihc (fixed = H&E,
  moving = IHC; 80 landmarks each). TRE_i = |T(p_moving,i) - p_fixed,i| (fixed px), as that
  folder's README scores it; mean per pair. Rows: unregistered; napari-comir affine (the affine
  part of the deformable route); napari-comir deformable (the field on top of that affine result,
  whether or not the verdict keeps it, and what the verdict says); what the user gets (the field
  if kept, else the affine part); the best affine map (fitted
  to the landmarks themselves: the floor of every affine method); itk-elastix's default
  rigid -> affine -> B-spline parameter maps (Mattes MI, grey images). elastix runs with the
  roles swapped (its fixed image is our moving one) so its transform maps our moving points to
  fixed ones, the direction of the score. SimpleITK Mattes MI with the same transform model
  (an affine, then a B-spline on top), the roles swapped likewise. ``--images`` picks what
  napari-comir registers: ``intensity`` (grey, inverted: stain-agnostic, no model),
  ``hematoxylin`` (its optical density by colour deconvolution, skimage's rgb2hed: the
  counterstain both share), both through the affine fit and the field as the pipeline's
  deformable route runs them; or a model (a name or file), through the whole pipeline as
  ``napari-comir register --transform deformable`` runs it (an H&E-vs-IHC model's networks
  take each image; bf-shg's bright-field network takes both). ``--he-ihc-pairs`` leaves out
  the stain a model was taught on (``napari-comir train --landmarks ... --out FILE``).
  ``taught-on-others``: for each pair, a new model taught by the recipe (``api.teach``, as
  ``napari-comir train --landmarks`` runs it: ``--teach-seconds``, ``--seed``) on the other
  three pairs aligned by their landmarks, then that pair registered with it: every pair by a
  model never shown it.
- ``synthetic``: the aligned BF/SHG pairs of ../shared/data/bf_shg; the BF deformed by a random
  smooth field (largest displacement ``--max-px``, smooth over 64 px); fixed = SHG CoMIR, moving
  = CoMIR of the deformed BF (bf-shg model), started from the true (identity) affine. Error =
  |found - true| of the moving -> fixed map, median over the tissue (BF darker than its
  background), and the same before (no field).
- ``timing``: seconds and peak resident memory of the deformable stage alone (what it adds to
  an affine registration) on a BF/SHG CoMIR pair at 512² and 2048² (the pair upsampled), each
  size in a fresh process; and on two colour bright fields (the shared H&E, a crop or enlarged,
  against itself deformed; he-ihc CoMIRs), matched with their tissue density beside the CoMIRs
  as the pipeline does.

Usage::

    python benchmarks/deformable.py --sections he_ihc,synthetic,timing
    python benchmarks/deformable.py --sections he_ihc --images taught_CD31.safetensors \\
        --he-ihc-pairs Cc10,Ki67,proSPC --no-simpleitk
    python benchmarks/deformable.py --sections he_ihc --images taught-on-others --seed 1 \\
        --no-elastix --no-simpleitk
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from PIL import Image  # noqa: E402

from napari_comir.core.evaluation import smooth_deformation  # noqa: E402
from napari_comir.core.field_transform import DisplacementFieldTransform, resample  # noqa: E402
from napari_comir.core.registration import register  # noqa: E402
from napari_comir.core.registration.deformable import register_deformable  # noqa: E402
from napari_comir.core.registration.image_detail import with_image_detail  # noqa: E402
from napari_comir.core.transforms import AffineTransform  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_points(path: Path) -> np.ndarray:
    with path.open() as handle:
        return np.array([[float(row["x"]), float(row["y"])] for row in csv.DictReader(handle)])


def intensity(rgb: np.ndarray) -> np.ndarray:
    """Grey, inverted (tissue bright), float32."""
    return (255.0 - rgb.astype(np.float32).mean(axis=-1)).astype(np.float32)


def tre(mapped_xy: np.ndarray, fixed_xy: np.ndarray) -> float:
    return float(np.linalg.norm(mapped_xy - fixed_xy, axis=1).mean())


def best_affine(moving_xy: np.ndarray, fixed_xy: np.ndarray) -> AffineTransform:
    design = np.c_[moving_xy, np.ones(len(moving_xy))]
    solution, *_ = np.linalg.lstsq(design, fixed_xy, rcond=None)
    return AffineTransform.from_matrix_xy(np.vstack([solution.T, [0.0, 0.0, 1.0]]))


def elastix_points(fixed: np.ndarray, moving: np.ndarray, points_xy: np.ndarray) -> tuple[np.ndarray, float]:
    """itk-elastix default rigid -> affine -> B-spline from ``moving`` onto ``fixed``; the
    ``points_xy`` of ``fixed`` mapped into ``moving`` (elastix's transform direction), seconds."""
    import itk

    parameters = itk.ParameterObject.New()
    for name in ("rigid", "affine", "bspline"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(name))
    fixed_image, moving_image = itk.GetImageFromArray(fixed), itk.GetImageFromArray(moving)
    start = time.perf_counter()
    _, transform_parameters = itk.elastix_registration_method(
        fixed_image, moving_image, parameter_object=parameters, log_to_console=False)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        point_file = Path(folder) / "points.txt"
        point_file.write_text(f"point\n{len(points_xy)}\n"
                              + "\n".join(f"{x} {y}" for x, y in points_xy) + "\n")
        itk.transformix_pointset(moving_image, transform_parameters,
                                 fixed_point_set_file_name=str(point_file), output_directory=folder)
        lines = (Path(folder) / "outputpoints.txt").read_text().splitlines()
    mapped = [line.split("OutputPoint = [")[1].split("]")[0].split() for line in lines]
    return np.array(mapped, dtype=float), seconds


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """The hematoxylin optical density (colour deconvolution): the nuclei both stains share."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 0].astype(np.float32)


def simpleitk_points(fixed: np.ndarray, moving: np.ndarray,
                     points_xy: np.ndarray) -> tuple[np.ndarray, float]:
    """SimpleITK Mattes MI (25 % of the pixels): an affine (3 levels, from the centred moments),
    then a B-spline on top (a mesh of 8 across, at 1/4 and 1/2 resolution, 50 L-BFGS-B steps);
    ``points_xy`` of ``fixed`` mapped into ``moving`` (ITK's direction), seconds."""

    import SimpleITK as sitk

    fixed_image, moving_image = sitk.GetImageFromArray(fixed), sitk.GetImageFromArray(moving)

    def method(levels):
        registration = sitk.ImageRegistrationMethod()
        registration.SetMetricAsMattesMutualInformation(32)
        registration.SetMetricSamplingStrategy(registration.RANDOM)
        registration.SetMetricSamplingPercentage(0.25, seed=0)
        registration.SetInterpolator(sitk.sitkLinear)
        registration.SetShrinkFactorsPerLevel(levels)
        registration.SetSmoothingSigmasPerLevel([level / 2 for level in levels])
        return registration

    start = time.perf_counter()
    affine_step = method([4, 2, 1])
    affine_step.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-4, 200)
    affine_step.SetOptimizerScalesFromPhysicalShift()
    affine_step.SetInitialTransform(sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS))
    affine = affine_step.Execute(fixed_image, moving_image)
    spline_step = method([4, 2])
    spline_step.SetOptimizerAsLBFGSB(numberOfIterations=50)
    spline_step.SetMovingInitialTransform(affine)
    spline_step.SetInitialTransform(sitk.BSplineTransformInitializer(fixed_image, [8, 8]), inPlace=True)
    spline = spline_step.Execute(fixed_image, moving_image)
    seconds = time.perf_counter() - start
    composite = sitk.CompositeTransform([affine, spline])  # the B-spline first, then the affine
    return np.array([composite.TransformPoint(tuple(map(float, p))) for p in points_xy]), seconds


def modalities_for(model) -> tuple[str, str]:
    """Both images are bright field: a model whose fixed network takes RGB (he-ihc, a taught
    model: H&E) gets each image through its own network; otherwise (bf-shg: SHG) both go
    through the bright-field one."""
    card = model.card
    fixed_modality = (card.fixed_modality if card.modalities[card.fixed_modality].channels == 3
                      else card.moving_modality)
    return fixed_modality, card.moving_modality


def stand_in_route(images: str, fixed_rgb: np.ndarray, moving_rgb: np.ndarray):
    """The deformable route on stand-in images (no model): the affine fit (no model selection,
    as the pipeline's deformable route), then the field; (affine, field result, affine seconds)."""
    fixed_c, moving_c = ((intensity(fixed_rgb), intensity(moving_rgb)) if images == "intensity"
                         else (hematoxylin(fixed_rgb), hematoxylin(moving_rgb)))
    start = time.perf_counter()
    affine = register(fixed_c, moving_c, transform="affine", select_model=False).transform
    affine_seconds = time.perf_counter() - start
    return affine, register_deformable(fixed_c, moving_c, affine), affine_seconds


def model_route(model, fixed_rgb: np.ndarray, moving_rgb: np.ndarray):
    """``napari-comir register --transform deformable`` (the pipeline: CoMIRs, search,
    refinement, the final MI refinement, the field and its verdict); the field is fitted again
    from the pipeline's affine part on its CoMIRs (with the images' detail where the pipeline adds it),
    to score it also where the verdict refused it.
    (affine part, field result, affine seconds)."""
    from napari_comir import api

    fixed_modality, moving_modality = modalities_for(model)
    *_, last = api.registration_events(fixed_rgb, moving_rgb, model, transform="deformable",
                                       fixed_modality=fixed_modality, moving_modality=moving_modality)
    outcome = last.result
    result = outcome.result
    affine = getattr(result.transform, "affine", result.transform)
    refined = register_deformable(*with_image_detail(outcome.fixed_comir, outcome.moving_comir,
                                                     fixed_rgb, moving_rgb)[:2], affine)
    assert refined.kept == result.deformable["kept"]  # the same field as the pipeline's
    return affine, refined, result.seconds - result.timings["deformable"]


def taught_on_others(held_out: dict, listed: list[dict], folder: Path, seconds: float, seed: int):
    """A new model taught by the recipe on every pair of ``listed`` but ``held_out``, each
    aligned by its landmarks (``napari-comir train --landmarks ... --max-seconds --seed``)."""
    from napari_comir import api
    from napari_comir.core.teaching import TeachingPair

    taught = [TeachingPair.from_landmarks(
        api.read_image(folder / row["fixed_image"]), api.read_image(folder / row["moving_image"]),
        read_points(folder / row["fixed_landmarks"]), read_points(folder / row["moving_landmarks"]),
        name=row["pair_id"]) for row in listed if row is not held_out]
    *_, last = api.teach(taught, max_seconds=seconds, seed=seed, fixed_modality="he",
                         moving_modality="ihc")
    outcome = last.result
    print(f"taught without {held_out['pair_id']}: {outcome.steps} steps in {outcome.seconds:.0f} s",
          flush=True)
    return outcome.model


def he_ihc(images: str, elastix: bool, simpleitk: bool, names: list[str] | None,
           teach_seconds: float = 120.0, seed: int = 0) -> None:
    folder = DATA / "he_ihc"
    with (folder / "pairs.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    pairs = [pair for pair in listed if names is None or pair["pair_id"].split("_")[-1] in names]
    model = None
    if images not in ("intensity", "hematoxylin", "taught-on-others"):
        from napari_comir import api

        model = api.load_model(images)
    print(f"\n## he_ihc: mean TRE (px), napari-comir on {images} images\n")
    print("| pair | unregistered | affine | deformable field | verdict (detail gain; fitted the "
          "other way round, differs by) | what the "
          "user gets | best affine | elastix B-spline | SimpleITK MI B-spline | s affine "
          "| s deformable | s elastix | s SimpleITK |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pair in pairs:
        fixed_rgb = np.asarray(Image.open(folder / pair["fixed_image"]).convert("RGB"))
        moving_rgb = np.asarray(Image.open(folder / pair["moving_image"]).convert("RGB"))
        fixed_xy = read_points(folder / pair["fixed_landmarks"])
        moving_xy = read_points(folder / pair["moving_landmarks"])
        if images == "taught-on-others":
            model = taught_on_others(pair, listed, folder, teach_seconds, seed)
        affine, result, affine_seconds = (stand_in_route(images, fixed_rgb, moving_rgb) if model is None
                                          else model_route(model, fixed_rgb, moving_rgb))
        field = result.field
        deformable_tre = tre(field.apply_xy(moving_xy), fixed_xy) if field is not None else float("nan")
        verdict = f"{'kept' if result.kept else 'affine stands'} ({result.detail_gain:.1f}"
        if result.inconsistency is not None:  # measured: the field fitted the other way round
            verdict += f"; differs {result.inconsistency:.2f}"
        verdict += ")"
        row = [tre(moving_xy, fixed_xy), tre(affine.apply_xy(moving_xy), fixed_xy), deformable_tre,
               tre(result.transform.apply_xy(moving_xy), fixed_xy)]
        bound = tre(best_affine(moving_xy, fixed_xy).apply_xy(moving_xy), fixed_xy)
        if elastix:
            # roles swapped: elastix's fixed image is our moving one, so its map takes our
            # moving points to fixed ones
            mapped, elastix_seconds = elastix_points(intensity(moving_rgb), intensity(fixed_rgb), moving_xy)
            elastix_tre = f"{tre(mapped, fixed_xy):.1f}"
        else:
            elastix_tre, elastix_seconds = "-", float("nan")
        if simpleitk:
            mapped, simpleitk_seconds = simpleitk_points(intensity(moving_rgb), intensity(fixed_rgb),
                                                         moving_xy)
            simpleitk_tre = f"{tre(mapped, fixed_xy):.1f}"
        else:
            simpleitk_tre, simpleitk_seconds = "-", float("nan")
        print(f"| {pair['pair_id']} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {verdict} | "
              f"{row[3]:.1f} | {bound:.1f} | {elastix_tre} | {simpleitk_tre} | {affine_seconds:.1f} | "
              f"{result.seconds:.1f} | {elastix_seconds:.1f} | {simpleitk_seconds:.1f} |", flush=True)


def synthetic(max_px: float, names: list[str] | None, seed: int) -> None:
    from napari_comir import api
    from napari_comir.core.inference import compute_comir

    folder = DATA / "bf_shg"
    with (folder / "pairs.csv").open() as handle:
        pairs = [row for row in csv.DictReader(handle) if names is None or row["name"] in names]
    model = api.load_model("bf-shg")
    card = model.card
    print(f"\n## synthetic smooth deformations (<= {max_px:g} px) of aligned bf_shg pairs\n")
    print("| pair | median error before (px) | median after | 90th pct after | median after, "
          "vs truth with the pair's own residual | kept (detail gain) | aligned pair's gain "
          "(kept) | s deformable |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(seed)
    medians = []
    for pair in pairs:
        shg = tifffile.imread(folder / pair["shg_file"])
        bf = tifffile.imread(folder / pair["bf_file"])
        shape = shg.shape[:2]
        true = smooth_deformation(shape, max_px, rng)
        deformed = resample(bf, true.inverse(), shape)  # true maps it back onto the SHG
        fixed_c = compute_comir(model, shg, card.fixed_modality)
        moving_c = compute_comir(model, deformed, card.moving_modality)
        identity = AffineTransform.rigid(0.0)
        result = register_deformable(fixed_c, moving_c, identity)
        # The aligned pair itself (no deformation): the verdict's null, and the pair's own
        # residual misalignment (1-2 px by that folder's README), which the field also finds.
        null = register_deformable(fixed_c, compute_comir(model, bf, card.moving_modality), identity)
        grey = bf.astype(np.float32).mean(axis=-1)
        background = np.median(np.r_[grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        rows, cols = np.nonzero(grey < 0.9 * background)
        tissue = np.stack([cols, rows], axis=1).astype(float)[::5]
        truth = true.inverse().apply_xy(tissue)  # fixed -> moving, the resampling map
        before = np.linalg.norm(tissue - truth, axis=1)
        found = result.field if result.field is not None else DisplacementFieldTransform.from_displacement(
            identity, np.zeros((2, 2, 2)), 1000.0)
        after = np.linalg.norm(found.inverse().apply_xy(tissue) - truth, axis=1)
        residual = null.field.inverse().apply_xy(tissue) if null.field is not None else tissue
        adjusted = np.linalg.norm(found.inverse().apply_xy(tissue)
                                  - true.inverse().apply_xy(residual), axis=1)
        medians.append((np.median(after), np.median(adjusted)))
        print(f"| {pair['name']} | {np.median(before):.2f} | {np.median(after):.2f} | "
              f"{np.percentile(after, 90):.2f} | {np.median(adjusted):.2f} | {result.kept} "
              f"({result.detail_gain:.1f}) | {null.detail_gain:.1f} ({null.kept}) | {result.seconds:.2f} |",
              flush=True)
    medians = np.array(medians)
    print(f"\nmedian of the pairs' medians: {np.median(medians[:, 0]):.2f} px (vs truth with the "
          f"residual {np.median(medians[:, 1]):.2f} px); worst pair {medians[:, 0].max():.2f} px")


def _peak_kib() -> int:
    """This process's peak resident memory (Linux ``VmHWM``, KiB): unlike ``ru_maxrss``, it
    starts afresh at exec, so the parent's peak is not carried into the child's."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


def _timing_pair(side: int, pair: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays the deformable stage matches for a ``pair`` ("bf-shg" or "he-ihc") at ``side``²,
    the moving image deformed by <= 8 px (scaled with the size)."""
    from napari_comir import api
    from napari_comir.core.inference import compute_comir

    if pair == "bf-shg":
        names = ("bf_shg/sa_stroma_pancreas_2000_16_SHG.tif", "bf_shg/sa_stroma_pancreas_2000_16_BF.tif")
        fixed, moving = (tifffile.imread(DATA / name) for name in names)
    else:
        fixed = np.asarray(Image.open(DATA / "he_ihc/images/lung-lesion_3_He-les3.jpg").convert("RGB"))
        fixed = moving = fixed[:min(side, 512), :min(side, 512)]
    if side != fixed.shape[0]:
        up = AffineTransform.similarity(0.0, side / fixed.shape[0])
        fixed, moving = resample(fixed, up, (side, side)), resample(moving, up, (side, side))
    model = api.load_model(pair)
    true = smooth_deformation((side, side), 8.0 * side / 512, np.random.default_rng(0),
                              smoothness_px=64.0 * side / 512)
    moving = resample(moving, true.inverse(), (side, side), cval=255 if pair == "he-ihc" else 0)
    fixed_comir = compute_comir(model, fixed, model.card.fixed_modality)
    moving_comir = compute_comir(model, moving, model.card.moving_modality)
    return with_image_detail(fixed_comir, moving_comir, fixed, moving)[:2]


def _timing_child(side: int, pair: str, folder: str) -> None:
    """One size, in a fresh process: with no arrays in ``folder`` yet, compute and save them
    (:func:`_timing_pair`); else load them and time the deformable stage alone."""
    fixed_path, moving_path = Path(folder) / "fixed.npy", Path(folder) / "moving.npy"
    if not fixed_path.exists():
        for path, array in zip((fixed_path, moving_path), _timing_pair(side, pair), strict=True):
            np.save(path, array)
        return
    fixed_c, moving_c = np.load(fixed_path), np.load(moving_path)
    register_deformable(fixed_c[:64, :64], moving_c[:64, :64], AffineTransform.rigid(0.0))  # warm-up
    before = _peak_kib()
    result = register_deformable(fixed_c, moving_c, AffineTransform.rigid(0.0))
    peak = _peak_kib()
    print(json.dumps({"side": side, "seconds": result.seconds, "kept": result.kept,
                      "channels": int(fixed_c.shape[-1]),
                      "peak_rss_mib": peak / 1024, "added_mib": (peak - before) / 1024}))


def timing(sides: list[int]) -> None:
    print("\n## seconds and peak memory of the deformable stage alone (CoMIRs given)\n")
    print("| pair | size | channels matched | seconds | peak RSS (MiB) | added by the stage (MiB) | kept |")
    print("|---|---|---|---|---|---|---|")
    for pair in ("bf-shg", "he-ihc"):
        for side in sides:
            with tempfile.TemporaryDirectory() as folder:
                command = [sys.executable, __file__, "--timing-child", str(side), "--timing-pair", pair,
                           "--timing-folder", folder]
                subprocess.run(command, check=True, capture_output=True)
                out = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {pair} | {side}² | {row['channels']} | {row['seconds']:.2f} | "
                  f"{row['peak_rss_mib']:.0f} | {row['added_mib']:.0f} | {row['kept']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="he_ihc,synthetic,timing")
    parser.add_argument("--images", default="intensity",
                        help="he_ihc: intensity, hematoxylin, taught-on-others, or a model name "
                        "or file")
    parser.add_argument("--teach-seconds", type=float, default=120.0,
                        help="he_ihc, taught-on-others: the teaching budget (default 120)")
    parser.add_argument("--he-ihc-pairs", help="he_ihc: comma-separated stains (default all; "
                        "leave out the one a model was taught on)")
    parser.add_argument("--no-elastix", action="store_true")
    parser.add_argument("--no-simpleitk", action="store_true")
    parser.add_argument("--max-px", type=float, default=10.0)
    parser.add_argument("--pairs", help="synthetic: comma-separated pair names (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="512,2048")
    parser.add_argument("--timing-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timing-pair", help=argparse.SUPPRESS)
    parser.add_argument("--timing-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing_child:
        _timing_child(args.timing_child, args.timing_pair, args.timing_folder)
        return
    sections = args.sections.split(",")
    if "he_ihc" in sections:
        he_ihc(args.images, not args.no_elastix, not args.no_simpleitk,
               args.he_ihc_pairs.split(",") if args.he_ihc_pairs else None, args.teach_seconds,
               args.seed)
    if "synthetic" in sections:
        synthetic(args.max_px, args.pairs.split(",") if args.pairs else None, args.seed)
    if "timing" in sections:
        timing([int(side) for side in args.sides.split(",")])


if __name__ == "__main__":
    main()
