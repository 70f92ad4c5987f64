"""``napari-comir train``: a model trained on aligned pairs, or taught a new modality pair
from landmarks or accepted registrations."""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

from ..core.defaults import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PATCH_SIZE,
    DEFAULT_STEPS,
    DEFAULT_TEACH_SECONDS,
)
from ._output import progress_bar, require_range

EPILOG = """With --landmarks (or --accepted, a registration you checked), the pairs need not be
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


def add_parser(sub) -> None:
    """The ``train`` sub-command's options."""
    train = sub.add_parser("train", help="train or fine-tune a CoMIR model on aligned pairs",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    train.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import api
    from ..core.data import AlignedPair
    from ..core.errors import InputError
    from ..core.io import check_output_path, check_outputs_apart
    from ..core.training import FINE_TUNE_LR, TrainConfig
    from ..core.zoo import model_file_paths, model_files, user_model_path

    if args.landmarks or args.accepted:
        return _teach(args)
    if not (args.pairs or (args.fixed and args.moving)):
        raise InputError("give --pairs CSV, or --fixed and --moving aligned images")
    if len(args.fixed or ()) > 1 or len(args.moving or ()) > 1:
        raise InputError("several --fixed/--moving pairs need --landmarks for each (aligned pairs: "
                         "list them in a --pairs CSV)")
    require_range(args, ("comir_channels", 1, 3), ("base_channels", 1, 64), ("depth", 1, 6),
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
        from ..core.synthetic import synthetic_pair

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
    with progress_bar(args.steps, "train") as bar:
        for event in itertools.chain([first], run):
            bar.total, bar.n = event.total, event.step  # the total shrinks under --max-seconds
            bar.set_postfix(loss=f"{event.metrics['loss']:.3g}",
                            pps=f"{event.metrics['patches_per_s']:.0f}", refresh=False)
            bar.refresh()
    model.card.training["steps"] = event.step  # fewer than --steps under --max-seconds
    if args.from_model:
        api.record_fine_tuning(model, args.from_model, model.card.training)
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
    from .. import api
    from ..core.errors import InputError
    from ..core.io import check_output_path, check_outputs_apart
    from ..core.io.landmarks import read_landmarks
    from ..core.io.transform_formats import read_transform
    from ..core.teaching import channels_message, read_teaching_pairs
    from ..core.zoo import check_user_model_name, model_file_paths
    from . import build_parser

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
    with warnings.catch_warnings(record=True) as caught:  # said as the command's own lines
        warnings.simplefilter("always", UserWarning)
        for fixed, moving, alignment in zip(args.fixed, args.moving, alignments, strict=True):
            images = api.read_image(fixed), api.read_image(moving)
            pairs.append(api.TeachingPair.from_landmarks(*images, *map(read_landmarks, alignment),
                                                         name=Path(moving).stem) if args.landmarks
                         else api.TeachingPair(*images, read_transform(alignment),
                                               name=Path(moving).stem))
    for warning in caught:
        print(f"napari-comir train: warning: {warning.message}", file=sys.stderr)
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
                bars[event.stage] = progress_bar(event.total, event.stage)
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
