"""``napari-comir register``: one pair registered, the result written as JSON (and exports)."""

from __future__ import annotations

import argparse
import json

from ..core.defaults import (
    DEFAULT_FINAL_REFINEMENT,
    DEFAULT_METHOD,
    DEFAULT_MODEL_NAME,
    DEFAULT_ROTATION_RANGE,
    DEFAULT_TRANSFORM,
    FINAL_REFINEMENTS,
    REGISTRATION_METHODS,
    TRANSFORM_CHOICES,
)
from ._output import add_compression, run_with_progress_bar

EPILOG = """The transform in the JSON maps MOVING pixel (x, y) to FIXED pixel (x, y), 0-based pixel
centres ("matrix_xy"); "matrix_rc" is the same in (row, col), ready for a napari layer's affine;
"decomposition" reads it as rotation, scale (x, y), shear and the shift of the moving image's
centre. "success_likely" is false, with "reasons", when the result is probably wrong.
With --model bf-shg the fixed image is SHG (grey) and the moving image is bright field (RGB or
grey).

Whole slides (pyramidal OME-TIFF, tiled TIFF, or over 4096 px) are read lazily and registered
coarse to fine; "levels" in the JSON maps every pair of their pyramid levels.

examples:
  napari-comir register --fixed shg.tif --moving bf.tif --model bf-shg --out result.json \\
      --resampled bf_on_shg.tif
  napari-comir register --fixed SHG.ome.tif --moving HE.ome.tif --model bf-shg --out r.json \\
      --export-itk r.tfm --export-ngff r.ngff.json --resampled HE_on_SHG.ome.tif
"""


def add_parser(sub) -> None:
    """The ``register`` sub-command's options."""
    reg = sub.add_parser("register", help="register a moving image onto a fixed image of another "
                         "modality", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    reg.add_argument("--fixed", required=True, help="fixed image (stays put)")
    reg.add_argument("--moving", required=True, help="moving image (is transformed)")
    reg.add_argument("--model", default=DEFAULT_MODEL_NAME,
                     help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    reg.add_argument("--out", required=True, help="result JSON")
    reg.add_argument("--resampled", help="also write the moving image resampled onto the fixed grid, "
                     "tile by tile: NAME.ome.tif a tiled pyramidal OME-TIFF, NAME.ome.zarr OME-Zarr, "
                     "NAME.tif one tiled level; with the fixed image's pixel size")
    add_compression(reg, "--resampled")
    reg.add_argument("--export-itk", metavar="TFM", help="also write the transform as an ITK/elastix "
                     "transform file (SimpleITK.ReadTransform): FIXED -> MOVING physical points, µm "
                     "(pixel-centre index x pixel size; pixel units when the sizes are unknown)")
    reg.add_argument("--export-ngff", metavar="JSON", help="also write an OME-NGFF (RFC-5) "
                     "coordinateTransformations JSON: an affine from MOVING to FIXED, µm, axes (y, x) "
                     "(a .ngff.zarr group holding the field for --transform deformable)")
    reg.add_argument("--export-csv", metavar="CSV", help="also write the transform as CSV (MOVING -> "
                     "FIXED pixels, matrix_xy; its convention in CSV.README.txt beside it)")
    reg.add_argument("--export-qupath", metavar="TXT", help="also write the 2x3 matrix for QuPath's "
                     "Interactive image alignment (FIXED -> MOVING, pixels, pixel-corner origin)")
    reg.add_argument("--export-elastix", metavar="TXT", help="also write elastix/transformix "
                     "parameter files (transformix -tp TXT): FIXED -> MOVING physical points, µm; for "
                     "--transform deformable an AffineTransform whose initial transform is a "
                     "DeformationFieldTransform (TXT minus .txt + .field.txt and .field.mha beside it)")
    reg.add_argument("--method", default=DEFAULT_METHOD, choices=REGISTRATION_METHODS,
                     help="global rotation x translation search (default) or SIFT + RANSAC")
    reg.add_argument("--transform", default=DEFAULT_TRANSFORM, choices=TRANSFORM_CHOICES,
                     help="transform model: rotation + shift; + one scale; or any affine map (default "
                     "affine: two microscopes' pixel grids differ by scale, rotation and a little "
                     "stretch); deformable: the affine result refined by a smooth displacement field, "
                     "kept only where the CoMIRs' details agree better beyond chance (images up to "
                     "4096 px; export as .tfm or .ngff.zarr)")
    reg.add_argument("--rotation-range", type=float, default=DEFAULT_ROTATION_RANGE, metavar="DEG",
                     help="search rotations within ±DEG degrees (default 180: any rotation)")
    reg.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="scales (fixed px per moving px) searched when the pixel sizes are unknown "
                     "(default 0.8 1.25; at most 0.5 2)")
    reg.add_argument("--fixed-pixel-size", type=float, metavar="UM",
                     help="fixed pixel size (µm); default: from the file (OME-TIFF PhysicalSizeX, "
                     "TIFF resolution tags) when both files record one")
    reg.add_argument("--moving-pixel-size", type=float, metavar="UM",
                     help="moving pixel size (µm); with both sizes only ±5 %% of scale is searched")
    reg.add_argument("--fixed-modality", help="network for the fixed image (default from the card: "
                     "shg for bf-shg)")
    reg.add_argument("--moving-modality", help="network for the moving image (default from the "
                     "card: bf for bf-shg)")
    reg.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    reg.add_argument("--final-refinement", default=DEFAULT_FINAL_REFINEMENT, choices=FINAL_REFINEMENTS,
                     help="refine the CoMIR result by mutual information on the images themselves, "
                     "kept where the CoMIRs still agree (default; images up to 4096 px), or not")
    reg.add_argument("--c4-average", action=argparse.BooleanOptionalAction, default=None,
                     help="average the CoMIRs over the 4 quarter-turns: exactly equivariant to quarter "
                     "turns and more precise, for 4x the inference time (default: the model card's "
                     "choice — off for bf-shg, whose median error it lowers only from 0.37-0.38 to "
                     "0.33-0.35 px; on for rgb-nir, 0.11-0.13 instead of 0.34-0.48 px)")
    reg.set_defaults(func=run)


def run(args) -> int:
    from ..core.io import write_text_atomic
    from ..pipeline import RegistrationOptions, file_registration_events

    exports = {"itk": args.export_itk, "ngff": args.export_ngff, "csv": args.export_csv,
               "qupath": args.export_qupath, "elastix": args.export_elastix}
    events = file_registration_events(
        args.fixed, args.moving, args.model, RegistrationOptions.from_namespace(args),
        resampled=args.resampled, compression=args.compression, exports=exports,
        reserved_outputs={"--out": args.out},
        c4_average=args.c4_average,
        labels={"fixed": "--fixed", "moving": "--moving", "resampled": "--resampled",
                **{name: f"--export-{name}" for name in exports}})
    outcome = run_with_progress_bar(events, "register").result
    result = outcome.result
    report = {
        **result.to_dict(),
        "fixed_pixel_size_um": outcome.fixed_pixel_size_um,
        "moving_pixel_size_um": outcome.moving_pixel_size_um,
        "model": outcome.model_name, "model_version": outcome.model_version,
        "c4_average": outcome.c4_average, "fixed": str(args.fixed), "moving": str(args.moving),
    }
    if outcome.level_transforms:  # the same map between every pair of pyramid levels
        report["levels"] = outcome.level_transforms
    if set(outcome.written) - {"resampled"}:
        report["exports"] = {name: path for name, path in outcome.written.items() if name != "resampled"}
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")  # last: it marks success
    print(f"{describe(result)} -> {args.out}")
    return 0


def describe(result) -> str:
    """The result as a microscopist reads it: rotation, scale, shift of the centre, verdict (and
    the deformable stage's)."""
    from ..core.registration.deformable import displacement_text

    affine = getattr(result.transform, "affine", result.transform)
    parts = affine.decompose(result.moving_centre_xy)
    text = (f"{affine.model}: rotation {parts.angle_deg:.2f}°, scale "
            f"{parts.scale_xy[0]:.4f} x {parts.scale_xy[1]:.4f}, shear {parts.shear:.4f}, centre "
            f"shifted by ({parts.shift_xy[0]:.1f}, {parts.shift_xy[1]:.1f}) px; score "
            f"{result.score:.3f}, detail {result.detail_score:.1f}, {result.seconds:.2f} s")
    if result.deformable is not None:
        text += (f"\n  + displacement field: points moved {displacement_text(result.deformable)}, "
                 f"detail gain {result.deformable['detail_gain']:.1f}" if result.deformable["kept"]
                 else "\n  no displacement field: " + "; ".join(result.deformable["reasons"]))
    if not result.success_likely:
        text += "\n  PROBABLY WRONG (check the overlay): " + "; ".join(result.reasons)
    return text
