"""The ``napari-comir`` command: train, infer, register, batch, models, demo."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from .core.defaults import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_FINAL_REFINEMENT,
    DEFAULT_METHOD,
    DEFAULT_MODEL_NAME,
    DEFAULT_PATCH_SIZE,
    DEFAULT_ROTATION_RANGE,
    DEFAULT_STEPS,
    DEFAULT_TEACH_SECONDS,
    DEFAULT_TILE_COMPRESSION,
    DEFAULT_TRANSFORM,
    FINAL_REFINEMENTS,
    REGISTRATION_METHODS,
    TILE_COMPRESSIONS,
    TRANSFORM_CHOICES,
)

EPILOG_TRAIN = """With --landmarks (or --accepted, a registration you checked), the pairs need not be
aligned: each is aligned by the affine map through its landmarks (or by the transform) and a
model is taught for its modalities (channel counts from the images: RGB or grey, either side) in
--max-seconds (default 120); it is saved only if it registers the --check-pairs (or, without
them, the taught pairs from scratch) and loses none that the model it would replace registered;
that model is kept as NAME-previous.

examples:
  napari-comir train --fixed HE.jpg --moving IHC.jpg --landmarks HE.csv IHC.csv --save-as he-ihc-lung \\
      --max-seconds 120
  napari-comir register --model he-ihc-lung --fixed HE2.jpg --moving IHC2.jpg --out r.json
  napari-comir train --pairs ../shared/data/bf_shg/pairs.csv --split train --preset bf-shg \\
      --steps 600 --out my-model
  napari-comir train --fixed shg.tif --moving bf.tif --from bf-shg --steps 60 --save-as my-tissue
  napari-comir train --fixed shg.tif --moving bf.tif --steps 100000 --max-seconds 60 --lr 5e-3 \\
      --out quick-model
"""
EPILOG_REGISTER = """The transform in the JSON maps MOVING pixel (x, y) to FIXED pixel (x, y), 0-based pixel
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
EPILOG_BATCH = """The CSV lists one pair per row: columns name, shg_file and bf_file (change them with
--fixed-column / --moving-column); relative paths are relative to the CSV. Results go to
OUT/results.csv (one row per pair: transform, score, status ok|error, error message) and
OUT/pairs/<name>.json. Rerunning the same command skips pairs already done.

examples:
  napari-comir batch pairs.csv --model bf-shg --out results/ --resampled
  napari-comir batch pairs.csv --model my-model.json --out results/ --workers 4
  napari-comir batch pairs.csv --out results/ --scheduler tcp://10.0.0.5:8786
"""

EPILOG_APPLY = """The transform is the JSON `register --out` writes (or an exported transform: JSON, CSV,
ITK, NGFF, QuPath): it maps MOVING pixels to FIXED pixels. Without --inverse, the input belongs to the
moving image and goes onto the fixed image; with --inverse, it belongs to the fixed image and
goes onto the moving image.
GeoJSON (e.g. QuPath's "Export objects as GeoJSON"): every geometry is transformed, properties,
ids and measurements are kept. QuPath's coordinates are full-resolution pixels with (0, 0) at
the top-left corner of the top-left pixel (--origin corner, the default); --origin centre puts
(0, 0) at its centre. Coordinates in µm: give that image's --moving-pixel-size or
--fixed-pixel-size.
Images: resampled onto the grid of --like (the fixed image; the moving image with --inverse),
bilinear; --labels for a label image or mask (nearest neighbour: values kept, none invented).

examples:
  napari-comir apply --transform result.json --geojson he_annotations.geojson \\
      --out annotations_on_shg.geojson
  napari-comir apply --transform result.json --geojson shg_annotations.geojson --inverse \\
      --out annotations_on_he.geojson
  napari-comir apply --transform result.json --image ch2.tif --like shg.tif --out ch2_on_shg.tif
  napari-comir apply --transform result.json --image nuclei.tif --labels --like shg.tif \\
      --out nuclei_on_shg.tif
"""


def _require_range(args, *limits) -> None:
    """Refuse, before any work, a whole-number option outside its range (one line, exit 2)."""
    from .core.errors import InputError

    for name, low, high in limits:
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise InputError(f"--{name.replace('_', '-')} must be between {low} and {high}, got {value}")


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)


def _run_with_progress_bar(events, description: str):
    """Run a pipeline's Progress events with a progress bar on stderr, each stage its own count,
    rate and time; returns the last event."""
    with _progress_bar(0, description) as bar:
        stage = None
        for event in events:
            if event.stage != stage:
                if stage is not None:
                    bar.refresh()  # the finished stage's last count, not a throttled earlier one
                stage = event.stage
                bar.set_description(stage, refresh=False)
                bar.reset(total=event.total)
            bar.total = event.total
            bar.update(event.step - bar.n)  # update(), not n =: keeps tqdm's rate right
    return event


def _train(args) -> int:
    import torch

    from . import api
    from .core.data import AlignedPair
    from .core.errors import InputError
    from .core.io import check_output_path, check_outputs_apart
    from .core.training import FINE_TUNE_LR, TrainConfig
    from .core.zoo import model_file_paths, model_files, user_model_path

    if args.landmarks or args.accepted:
        return _teach(args)
    if not (args.pairs or (args.fixed and args.moving)):
        raise InputError("give --pairs CSV, or --fixed and --moving aligned images")
    if len(args.fixed or ()) > 1 or len(args.moving or ()) > 1:
        raise InputError("several --fixed/--moving pairs need --landmarks for each (aligned pairs: "
                         "list them in a --pairs CSV)")
    _require_range(args, ("comir_channels", 1, 3), ("base_channels", 1, 64), ("depth", 1, 6),
                   ("steps", 1, 10**9), ("batch_size", 2, 4096), ("patch_size", 16, 4096),
                   ("checkpoint_every", 1, 10**9), ("synthetic", 0, 10**4))
    for name, high in (("lr", 10), ("max_seconds", 10**9)):  # NaN and inf fail too
        value = getattr(args, name)
        if value is not None and not 0 < value <= high:
            raise InputError(f"--{name.replace('_', '-')} must be positive and at most {high}, "
                             f"got {value}")
    for name in ("equivariance_weight", "activation_penalty"):
        if not 0 <= getattr(args, name) <= 1e3:
            raise InputError(f"--{name.replace('_', '-')} must be from 0 to 1000, got {getattr(args, name)}")
    if args.checkpoint:
        check_output_path(args.checkpoint)
    outputs = {"--checkpoint": args.checkpoint}
    if args.out or args.save_as is not None:
        option = "--out" if args.out else "--save-as"
        # --save-as is checked now (even ""), not after the training it would have thrown away
        weights, card = model_file_paths(args.out or user_model_path(args.save_as))
        outputs.update({f"{option} weights": weights, f"{option} card": card})
    inputs = {"--pairs": args.pairs, **_listed(args, "fixed", "moving"),
              **_listed_images(args.pairs), **model_files(args.from_model, "--from")}
    check_outputs_apart(outputs, inputs)
    # --checkpoint may equal --resume: continuing a run in place is what resuming is for.
    check_outputs_apart({k: v for k, v in outputs.items() if k != "--checkpoint"},
                        {"--resume": args.resume})
    if args.out:
        check_output_path(card)
    torch.manual_seed(args.seed)  # initial weights
    if args.from_model:
        model = api.load_model(args.from_model, args.device)
    else:
        model = api.new_model(args.preset, name=args.name or args.preset,
                              comir_channels=args.comir_channels,
                              architecture={"type": "unet", "base_channels": args.base_channels,
                                            "depth": args.depth})
    fixed_modality, moving_modality = model.card.fixed_modality, model.card.moving_modality
    if args.pairs:
        pairs = api.read_pairs_csv(args.pairs, model.modalities, split=args.split)
    else:
        pairs = [AlignedPair({fixed_modality: api.read_image(args.fixed[0]),
                              moving_modality: api.read_image(args.moving[0])},
                             name=Path(args.fixed[0]).stem)]
    if args.synthetic:
        from .core.synthetic import synthetic_pair

        for seed in range(args.synthetic):
            bf, shg = synthetic_pair(seed=seed)
            pairs.append(AlignedPair({moving_modality: bf, fixed_modality: shg}, name=f"synthetic-{seed}"))
    lr = args.lr if args.lr is not None else (FINE_TUNE_LR if args.from_model else 1e-3)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
                         lr=lr, optimizer=args.optimizer, seed=args.seed, device=args.device,
                         freeze_batchnorm=bool(args.from_model) and not args.update_batchnorm,
                         checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                         max_seconds=args.max_seconds, equivariance_weight=args.equivariance_weight,
                         turned_negatives=args.turned_negatives, l1=args.activation_penalty,
                         l2=args.activation_penalty)
    model.card.training = {
        "pairs": [p.name for p in pairs], "steps": args.steps, "batch_size": args.batch_size,
        "patch_size": args.patch_size, "lr": lr, "optimizer": args.optimizer, "seed": args.seed,
        "equivariance_weight": args.equivariance_weight, "turned_negatives": args.turned_negatives,
        "activation_penalty": args.activation_penalty,
        "started_from": args.from_model or "scratch", "command": " ".join(sys.argv[1:]),
    }
    run = api.fine_tune(model, pairs, config, resume=args.resume, copy_model=False)
    first = next(run)  # validation errors surface here, before a progress bar is drawn
    with _progress_bar(args.steps, "train") as bar:
        for event in itertools.chain([first], run):
            bar.total, bar.n = event.total, event.step  # the total shrinks under --max-seconds
            bar.set_postfix(loss=f"{event.metrics['loss']:.3g}",
                            pps=f"{event.metrics['patches_per_s']:.0f}", refresh=False)
            bar.refresh()
    model.card.training["steps"] = event.step  # fewer than --steps under --max-seconds
    path = (api.save_user_model(model, args.save_as) if args.save_as is not None
            else api.save_model(model, args.out))
    print(f"saved model card {path}")
    return 0


def _listed(args, *options: str) -> dict[str, str]:
    """The files of repeatable options ({"--fixed 1": path, ...})."""
    return {f"--{option} {number}": path for option in options
            for number, path in enumerate(getattr(args, option) or (), start=1)}


#: ``train`` options of training from aligned pairs that the teaching recipe sets itself.
_NOT_TAUGHT_WITH = ("split", "synthetic", "preset", "comir_channels", "base_channels", "depth",
                    "steps", "batch_size", "patch_size", "lr", "update_batchnorm",
                    "equivariance_weight", "turned_negatives", "activation_penalty", "optimizer",
                    "checkpoint", "resume")


def _teach(args) -> int:
    """``train --landmarks`` or ``--accepted``: the teaching recipe (api.teach), saved only if its
    check allows."""
    from . import api
    from .core.errors import InputError
    from .core.io import check_output_path, check_outputs_apart
    from .core.io.landmarks import read_landmarks
    from .core.io.transform_formats import read_transform
    from .core.teaching import channels_message, read_teaching_pairs
    from .core.zoo import check_user_model_name, model_file_paths

    if args.landmarks and args.accepted:
        raise InputError("align the pairs by --landmarks or by --accepted transforms, not both")
    alignments = args.landmarks or args.accepted
    option = "--landmarks" if args.landmarks else "--accepted"
    if args.pairs or len({len(args.fixed or ()), len(args.moving or ()), len(alignments)}) != 1:
        raise InputError(f"with {option}, give one --fixed, --moving and {option} per pair "
                         "(not --pairs)")
    if args.max_seconds is not None and not 0 < args.max_seconds <= 10**9:
        raise InputError(f"--max-seconds must be positive, got {args.max_seconds}")
    defaults = vars(build_parser().parse_args(["train", "--out", "-"]))
    ignored = [f"--{name.replace('_', '-')}" for name in _NOT_TAUGHT_WITH
               if getattr(args, name) != defaults[name]]
    if ignored:
        raise InputError(f"{', '.join(ignored)}: not used when teaching from {option} (the teaching "
                         "recipe sets the training; give --max-seconds, --seed, --from)")
    if args.save_as is not None:
        check_user_model_name(args.save_as)
    outputs = {}
    if args.out:
        weights, card = model_file_paths(args.out)
        outputs = {"--out weights": weights, "--out card": card}
        check_output_path(card)
    points = {f"--landmarks {n}": path for n, pair in enumerate(args.landmarks or (), 1) for path in pair}
    check_outputs_apart(outputs, {**_listed(args, "fixed", "moving", "accepted"), **points,
                                  "--check-pairs": args.check_pairs})
    pairs = []
    for fixed, moving, alignment in zip(args.fixed, args.moving, alignments, strict=True):
        images = api.read_image(fixed), api.read_image(moving)
        pairs.append(api.TeachingPair.from_landmarks(*images, *map(read_landmarks, alignment),
                                                     name=Path(moving).stem) if args.landmarks
                     else api.TeachingPair(*images, read_transform(alignment), name=Path(moving).stem))
    check_pairs = read_teaching_pairs(args.check_pairs) if args.check_pairs else []
    # The model replaced: the one taught from, or the user model of that name already saved.
    old = args.from_model or (args.save_as if args.save_as in api.list_models() else None)
    run = api.teach(pairs, start=args.from_model, old=old, check_pairs=check_pairs,
                    max_seconds=args.max_seconds or DEFAULT_TEACH_SECONDS,
                    fixed_modality=args.fixed_modality, moving_modality=args.moving_modality,
                    name=args.save_as or args.name or "taught", seed=args.seed, device=args.device)
    bars = {}  # one bar per stage: "train" (steps), then "check" (pairs registered)
    try:
        for event in run:
            if event.stage not in bars:
                for bar in bars.values():
                    bar.close()
                bars[event.stage] = _progress_bar(event.total, event.stage)
            bar = bars[event.stage]
            bar.total, bar.n = event.total, event.step  # the train total shrinks to the budget
            if "loss" in event.metrics:
                bar.set_postfix(loss=f"{event.metrics['loss']:.3g}", refresh=False)
            else:
                bar.set_postfix_str(event.message[:60], refresh=False)
            bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()
    outcome = event.result
    outcome.model.card.training["command"] = " ".join(sys.argv[1:])
    for check in outcome.checks:
        print(f"{check.name}: {check.new_error:.1f} px, "
              f"{'registered' if check.new_registered else 'not registered'}"
              + ("" if check.old_error is None else f" (old model {check.old_error:.1f} px)"))
    print(outcome.reason)
    if not outcome.replaces:
        print("nothing saved", file=sys.stderr)
        return 1
    path = (api.save_taught_model(outcome, args.save_as) if args.save_as is not None
            else api.save_model(outcome.model, args.out))
    print(f"saved model card {path}: {channels_message(outcome.model.card)}")
    return 0


def _listed_images(pairs_csv: str | None) -> dict[str, Path]:
    """The images a pairs CSV lists ({"--pairs row N column": path}), as far as it can be read:
    outputs must not be one of them either (the CSV itself is checked when it is read)."""
    import csv

    if not pairs_csv:
        return {}
    try:
        with open(pairs_csv, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    root = Path(pairs_csv).parent
    return {f"--pairs row {number} {column}": root / value
            for number, row in enumerate(rows, start=2) for column, value in row.items()
            if isinstance(column, str) and column.endswith("_file") and isinstance(value, str) and value}


def _infer(args) -> int:
    from . import api
    from .core.inference import comir_tiles
    from .core.io import check_output_path, check_outputs_apart, write_tiff
    from .core.zoo import model_files

    _require_range(args, ("tile", 64, 16384), ("overlap", 0, 4096))
    check_outputs_apart({"--out": args.out}, {"image": args.image, **model_files(args.model)})
    check_output_path(args.out)
    model = api.load_model(args.model, args.device)
    image = api.read_image(args.image)
    events = comir_tiles(model, image, args.modality, tile=args.tile, overlap=args.overlap)
    with _progress_bar(0, f"CoMIR {args.modality}") as bar:
        for event in events:
            bar.total, bar.n = event.total, event.step
            bar.refresh()
    comir = event.result
    write_tiff(args.out, comir.squeeze(-1) if comir.shape[-1] == 1 else comir)
    print(f"wrote {args.out} ({comir.shape[0]}x{comir.shape[1]}, {comir.shape[-1]} channel(s))")
    return 0


def _register(args) -> int:
    from .core.io import write_text_atomic
    from .pipeline import RegistrationOptions, file_registration_events

    exports = {"itk": args.export_itk, "ngff": args.export_ngff, "csv": args.export_csv,
               "qupath": args.export_qupath, "elastix": args.export_elastix}
    events = file_registration_events(
        args.fixed, args.moving, args.model, RegistrationOptions.from_namespace(args),
        resampled=args.resampled, compression=args.compression, exports=exports,
        reserved_outputs={"--out": args.out},
        c4_average=args.c4_average,
        labels={"fixed": "--fixed", "moving": "--moving", "resampled": "--resampled",
                **{name: f"--export-{name}" for name in exports}})
    outcome = _run_with_progress_bar(events, "register").result
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
    affine = getattr(result.transform, "affine", result.transform)
    parts = affine.decompose(result.moving_centre_xy)
    text = (f"{affine.model}: rotation {parts.angle_deg:.2f}°, scale "
            f"{parts.scale_xy[0]:.4f} x {parts.scale_xy[1]:.4f}, shear {parts.shear:.4f}, centre "
            f"shifted by ({parts.shift_xy[0]:.1f}, {parts.shift_xy[1]:.1f}) px; score "
            f"{result.score:.3f}, detail {result.detail_score:.1f}, {result.seconds:.2f} s")
    if result.deformable is not None:
        text += (f"\n  + displacement field: up to {result.deformable['max_displacement_px']:.1f} px, "
                 f"detail gain {result.deformable['detail_gain']:.1f}" if result.deformable["kept"]
                 else "\n  no displacement field: " + "; ".join(result.deformable["reasons"]))
    if not result.success_likely:
        text += "\n  PROBABLY WRONG (check the overlay): " + "; ".join(result.reasons)
    return text


def _batch(args) -> int:
    """Exit status 0 if every pair registered, 1 if some failed (Dask is imported only here)."""
    from tqdm.auto import tqdm

    from .batch import run_batch

    events = run_batch(args.pairs, args.model, args.out, scheduler=args.scheduler,
                       n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                       resampled=args.resampled, compression=args.compression,
                       fixed_column=args.fixed_column,
                       moving_column=args.moving_column, method=args.method,
                       transform=args.transform, rotation_range=args.rotation_range,
                       scale_range=args.scale_range)
    try:
        with tqdm(desc="batch", unit="pair", dynamic_ncols=True, file=sys.stderr) as bar:
            for event in events:
                bar.total, bar.n = event.total, event.step
                bar.set_postfix(ok=event.metrics["ok"], errors=event.metrics["errors"],
                                refresh=False)
                bar.refresh()
    except BrokenPipeError:  # the reader went away (`| head`): stop the cluster now
        silence_output()
        events.close()  # finished pairs stay recorded; a rerun continues
        raise
    summary = event.result
    print(f"{summary['ok']}/{summary['total']} pairs ok ({summary['skipped']} already done), "
          f"{summary['errors']} failed -> {summary['results_csv']}")
    return 1 if summary["errors"] else 0


def _apply(args) -> int:
    """Carry annotations or an image between the moving and the fixed image (no networks)."""
    from .core.apply import apply_transform_to_geojson, image_file_events
    from .core.errors import InputError
    from .core.io.geojson import count_positions

    direction = ("from the fixed onto the moving image" if args.inverse else
                 "from the moving onto the fixed image")
    geojson_only = (("--origin", args.origin), ("--moving-pixel-size", args.moving_pixel_size),
                    ("--fixed-pixel-size", args.fixed_pixel_size))
    image_only = (("--like", args.like), ("--labels", args.labels))
    misplaced = [name for name, value in (image_only if args.geojson else geojson_only)
                 if value not in (None, False)]
    if misplaced:
        this, other = ("--geojson", "--image") if args.geojson else ("--image", "--geojson")
        raise InputError(f"{', '.join(misplaced)}: only with {other}, not with {this}")
    if args.geojson:
        carried = apply_transform_to_geojson(
            args.transform, args.geojson, args.out, inverse=args.inverse,
            origin=args.origin or "corner", moving_pixel_size=args.moving_pixel_size,
            fixed_pixel_size=args.fixed_pixel_size)
        print(f"{count_positions(carried)} positions carried {direction} -> {args.out}")
        return 0
    if not args.like:
        raise InputError("--image needs --like: the image whose grid the output takes (the fixed "
                         "image; the moving image with --inverse)")
    events = image_file_events(args.transform, args.image, args.like, args.out, inverse=args.inverse,
                               labels=args.labels, compression=args.compression)
    rows, cols = _run_with_progress_bar(events, "apply").result
    kind = "labels" if args.labels else "image"
    print(f"{kind} carried {direction} ({rows}x{cols}) -> {args.out}")
    return 0


def _add_compression(parser, output: str) -> None:
    parser.add_argument("--compression", choices=TILE_COMPRESSIONS, default=DEFAULT_TILE_COMPRESSION,
                        help=f"with {output}: how a TIFF output's tiles are compressed (default "
                        f"{DEFAULT_TILE_COMPRESSION}: JPEG for 8-bit RGB, as slide scanners write it; "
                        "lossless zlib for grey images and labels; zstd is the fastest lossless "
                        "one, but QuPath before 0.5 cannot read it)")


def _models(args) -> int:
    from .core.errors import ComirError
    from .core.zoo import BUNDLED_DIR, list_models, read_card

    for name, card_path in list_models().items():
        origin = "bundled" if card_path.parent == BUNDLED_DIR else "user"
        try:  # a broken user card is listed as such; it does not stop the listing
            card = read_card(card_path)
        except ComirError as exc:
            print(f"{name:20s} {origin:8s} unusable: {str(exc).splitlines()[0]}")
            continue
        modalities = (f"fixed {card.fixed_modality} ({card.modalities[card.fixed_modality].channels} "
                      f"ch), moving {card.moving_modality} "
                      f"({card.modalities[card.moving_modality].channels} ch)")
        print(f"{name:20s} {origin:8s} {modalities:40s} {card.description}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(headless=args.headless, model=args.model, screenshot=args.screenshot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-comir", description="Multimodal image registration with CoMIRs "
        "(contrastive multimodal image representations).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train or fine-tune a CoMIR model on aligned pairs",
                           epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = train.add_argument_group("aligned training data (a CSV, or one pair)")
    source.add_argument("--pairs", help="CSV with columns name, <modality>_file (e.g. bf_file, "
                        "shg_file) and optional split; paths relative to the CSV")
    source.add_argument("--split", help="use only rows whose split column equals this, e.g. train")
    source.add_argument("--fixed", action="append", help="fixed-modality image of one pair (SHG "
                        "for bf-shg); with --landmarks, repeat --fixed/--moving/--landmarks per pair")
    source.add_argument("--moving", action="append",
                        help="moving-modality image of the same pair (BF for bf-shg)")
    teach = train.add_argument_group(
        "teaching a new modality pair from landmarks (pairs need not be aligned)")
    teach.add_argument("--landmarks", nargs=2, action="append", metavar=("FIXED_POINTS", "MOVING_POINTS"),
                       help="landmark files of the pair (CSV x,y or id,x,y with an optional header, "
                       "napari Points CSV, QuPath/ImageJ point exports, GeoJSON points; row i of one "
                       "pairs with row i of the other; 4 or more): the pair is aligned by the affine "
                       "map through them and a model is taught with the one teaching recipe")
    teach.add_argument("--accepted", action="append", metavar="TRANSFORM",
                       help="instead of --landmarks: a registration of the pair you accepted (the "
                       "JSON `register --out` writes, or an exported transform), one per pair")
    teach.add_argument("--check-pairs", metavar="CSV",
                       help="pairs held out of the teaching, registered by the taught and the old "
                       "model before anything is saved (columns fixed_image, moving_image, "
                       "fixed_landmarks, moving_landmarks; paths relative to the CSV)")
    teach.add_argument("--fixed-modality", default="fixed",
                       help="name of the network taking the fixed images (default fixed)")
    teach.add_argument("--moving-modality", default="moving",
                       help="name of the network taking the moving images (default moving)")
    source.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="also train on N generated BF/SHG-like pairs (bf-shg only; default 0)")
    model = train.add_argument_group("model")
    model.add_argument("--from", dest="from_model", metavar="MODEL",
                       help="fine-tune this model (bundled name, user model or file) instead of "
                       "starting from scratch")
    model.add_argument("--preset", default="bf-shg", choices=["bf-shg", "rgb-nir"],
                       help="modality pair of a model trained from scratch (default bf-shg)")
    model.add_argument("--name", help="model name written into the card (default: the preset)")
    model.add_argument("--comir-channels", type=int, default=1, help="CoMIR channels, 1-3 (default 1)")
    model.add_argument("--base-channels", type=int, default=DEFAULT_ARCHITECTURE["base_channels"],
                       help=f"U-Net width (default {DEFAULT_ARCHITECTURE['base_channels']})")
    model.add_argument("--depth", type=int, default=DEFAULT_ARCHITECTURE["depth"],
                       help=f"U-Net resolution levels (default {DEFAULT_ARCHITECTURE['depth']})")
    opts = train.add_argument_group("optimisation")
    opts.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                      help=f"optimiser steps (default {DEFAULT_STEPS})")
    opts.add_argument("--max-seconds", type=float,
                      help="wall-clock budget: stop when spent, with the learning-rate decay planned "
                      "for the steps that fit (use with a large --steps; with --landmarks the "
                      f"budget, default {DEFAULT_TEACH_SECONDS:g})")
    opts.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                      help=f"patch pairs per step (default {DEFAULT_BATCH_SIZE})")
    opts.add_argument("--patch-size", type=int, default=DEFAULT_PATCH_SIZE,
                      help=f"patch side in px (default {DEFAULT_PATCH_SIZE})")
    opts.add_argument("--lr", type=float, help="learning rate (default 1e-3 from scratch, 1e-4 with --from)")
    opts.add_argument("--update-batchnorm", action="store_true",
                      help="with --from: also re-estimate BatchNorm statistics on the new pairs "
                      "(default: keep the pretrained ones, which fine-tunes far more gently)")
    opts.add_argument("--equivariance-weight", type=float, default=0.0, metavar="W",
                      help="weight of an extra loss term asking f(rotate(x)) = rotate(f(x)) at any angle, "
                      "not only quarter turns (default 0 = off; the bundled bf-shg used 0.3; 3 kept the "
                      "representation from forming). About 1.5-2x the cost of a step")
    opts.add_argument("--turned-negatives", action="store_true",
                      help="also contrast each patch with its partner turned by 90/180/270° (not in the "
                      "paper): helps training from scratch on one or a few pairs learn CoMIRs that "
                      "tell rotations apart")
    opts.add_argument("--activation-penalty", type=float, default=1e-4, metavar="W",
                      help="weight of the L1 and of the L2 penalty on the CoMIRs' values, which "
                      "keeps them bounded (default 1e-4)")
    opts.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="default adam")
    opts.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    opts.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    opts.add_argument("--checkpoint", help="write a resumable checkpoint here (atomic)")
    opts.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    opts.add_argument("--resume", help="continue from this checkpoint")
    out = train.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="write OUT.safetensors and OUT.json (the model card)")
    out.add_argument("--save-as", help="save as a named user model (see `napari-comir models`)")
    train.set_defaults(func=_train)

    infer = sub.add_parser("infer", help="compute the CoMIR of an image and write it as TIFF",
                           epilog="example:\n  napari-comir infer bf.tif --model bf-shg --modality bf "
                           "--out bf_comir.tif", formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("image", help="input image (TIFF, PNG, JPEG)")
    infer.add_argument("--model", default=DEFAULT_MODEL_NAME,
                       help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    infer.add_argument("--modality", required=True, help="which network, e.g. bf or shg")
    infer.add_argument("--out", required=True, help="output TIFF (float32)")
    infer.add_argument("--tile", type=int, default=1024, help="tile side in px (default 1024)")
    infer.add_argument("--overlap", type=int, default=64, help="tile overlap in px (default 64)")
    infer.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    infer.set_defaults(func=_infer)

    reg = sub.add_parser("register", help="register a moving image onto a fixed image of another "
                         "modality", epilog=EPILOG_REGISTER,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    reg.add_argument("--fixed", required=True, help="fixed image (stays put)")
    reg.add_argument("--moving", required=True, help="moving image (is transformed)")
    reg.add_argument("--model", default=DEFAULT_MODEL_NAME,
                     help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    reg.add_argument("--out", required=True, help="result JSON")
    reg.add_argument("--resampled", help="also write the moving image resampled onto the fixed grid, "
                     "tile by tile: NAME.ome.tif a tiled pyramidal OME-TIFF, NAME.ome.zarr OME-Zarr, "
                     "NAME.tif one tiled level; with the fixed image's pixel size")
    _add_compression(reg, "--resampled")
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
    reg.set_defaults(func=_register)

    apply = sub.add_parser("apply", help="carry annotations (GeoJSON), another channel or a label "
                           "image with a found transform, moving -> fixed or back",
                           epilog=EPILOG_APPLY, formatter_class=argparse.RawDescriptionHelpFormatter)
    apply.add_argument("--transform", required=True, metavar="JSON",
                       help="the transform: `register --out` JSON, or an export (napari-comir "
                       "JSON or CSV, ITK .tfm, .ngff.json, .qupath.txt)")
    what = apply.add_mutually_exclusive_group(required=True)
    what.add_argument("--geojson", help="annotations to carry (GeoJSON, e.g. exported from QuPath)")
    what.add_argument("--image", help="image to carry (TIFF, PNG, JPEG): another channel, a mask, "
                      "a label image")
    apply.add_argument("--out", required=True, help="output GeoJSON; for --image a .tif, .ome.tif "
                       "(tiled pyramid) or .ome.zarr, written tile by tile")
    apply.add_argument("--inverse", action="store_true", help="the input belongs to the fixed "
                       "image: carry it onto the moving image (default: moving -> fixed)")
    apply.add_argument("--like", metavar="IMAGE", help="with --image: the image whose grid the "
                       "output takes (the fixed image; the moving image with --inverse)")
    apply.add_argument("--labels", action="store_true", help="with --image: a label image or mask "
                       "(nearest neighbour: every value kept, none invented)")
    _add_compression(apply, "--image")
    apply.add_argument("--origin", choices=["corner", "centre"], help="with --geojson: (0, 0) at "
                       "the top-left corner of the top-left pixel (default, as QuPath) or at its "
                       "centre")
    apply.add_argument("--moving-pixel-size", type=float, metavar="UM", help="with --geojson: "
                       "coordinates in the moving image's frame are µm, this many per pixel "
                       "(default: pixels)")
    apply.add_argument("--fixed-pixel-size", type=float, metavar="UM", help="with --geojson: "
                       "coordinates in the fixed image's frame are µm, this many per pixel "
                       "(default: pixels)")
    apply.set_defaults(func=_apply)

    models = sub.add_parser("models", help="list bundled and user models")
    models.set_defaults(func=_models)

    demo = sub.add_parser("demo", help="register the bundled sample pair (opens napari unless "
                          "--headless)")
    demo.add_argument("--headless", action="store_true", help="no GUI: print the result")
    demo.add_argument("--model", default=DEFAULT_MODEL_NAME,
                      help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    demo.add_argument("--screenshot", metavar="PNG", help="run the GUI main job end to end (open, "
                      "register, the default review view), save the whole window here, exit "
                      "(needs a display; under Xvfb: xvfb-run -a napari-comir demo --screenshot x.png)")
    demo.set_defaults(func=_demo)

    batch = sub.add_parser("batch", help="register many pairs listed in a CSV, in parallel (Dask); "
                           "resumable", epilog=EPILOG_BATCH,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("pairs", help="CSV of pairs (columns name, shg_file, bf_file)")
    batch.add_argument("--model", default=DEFAULT_MODEL_NAME,
                       help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    batch.add_argument("--out", required=True, help="output folder (results.csv, pairs/, resampled/)")
    batch.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. "
                       "tcp://host:8786 (default: a local cluster)")
    batch.add_argument("--workers", type=int, metavar="N",
                       help="local worker processes (default: one per CPU core)")
    batch.add_argument("--threads-per-worker", type=int, metavar="N", help="default 1")
    batch.add_argument("--resampled", action="store_true",
                       help="also write each moving image resampled onto its fixed grid")
    _add_compression(batch, "--resampled")
    batch.add_argument("--method", default=DEFAULT_METHOD, choices=REGISTRATION_METHODS,
                       help="global rotation x translation search (default) or SIFT + RANSAC")
    batch.add_argument("--transform", default=DEFAULT_TRANSFORM, choices=TRANSFORM_CHOICES,
                       help="transform model, as for register (default affine); deformable "
                       "writes each kept field to OUT/fields/<pair>.npz")
    batch.add_argument("--rotation-range", type=float, default=DEFAULT_ROTATION_RANGE, metavar="DEG",
                       help="search rotations within ±DEG degrees (default 180: any rotation)")
    batch.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="scales searched (default 0.8 1.25)")
    batch.add_argument("--fixed-column", default="shg_file",
                       help="CSV column of the fixed images (default shg_file)")
    batch.add_argument("--moving-column", default="bf_file",
                       help="CSV column of the moving images (default bf_file)")
    batch.set_defaults(func=_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2, never a traceback."""
    from .core.errors import ComirError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ComirError as exc:
        print(f"napari-comir {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-comir {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `napari-comir batch ... | head`: end quietly, as shell tools do
        silence_output()
        return 128 + 13  # SIGPIPE


def silence_output() -> None:
    """Point stdout and stderr at /dev/null: their reader is gone, and any later write (a
    progress bar closing, a library's log line) must not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
