"""Time-boxed training: from scratch on ONE aligned pair, and fine-tuning the bundled model.

Trains for a wall-clock budget (not a step count), then measures registration success on the
val pairs (CoMIR + global search, 300² crops, angle ~ U(±180°), |t| <= 20 px) — images the
training never saw.

Usage::

    python benchmarks/train_one_pair.py --pair X02Y08 --seconds 60            # from scratch
    python benchmarks/train_one_pair.py --pair 1B_B7 --seconds 30 --from bf-shg  # fine-tune

``--steps N --device cuda`` screens a recipe on a faster machine at the step count that fits
the budget on the target one (e.g. ~60 steps of batch 16 in 60 s on 2 CPU cores), in float32
like the CPU (no AMP).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from evaluate_model import registration_success  # noqa: E402  (a sibling script)

from napari_comir import api  # noqa: E402
from napari_comir.core.data import read_pairs_csv  # noqa: E402
from napari_comir.core.training import FINE_TUNE_LR, TrainConfig  # noqa: E402
from napari_comir.core.zoo import save_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg"


def success_rate(model, pairs, seeds: int, angle: str = "180") -> tuple[float, float]:
    """Success % and median corner error (px) of CoMIR + search on ±``angle``° crops of ``pairs``."""
    result = registration_success(model, pairs, seeds, (angle,), verbose=False)[angle]
    return result["success_pct"], result["median_error_px"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with pairs.csv")
    parser.add_argument("--pair", default="X02Y08", help="name of the training pair (pairs.csv)")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock training budget")
    parser.add_argument("--from", dest="from_model", help="fine-tune this model instead")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, help="default 3e-3 from scratch, 1e-4 fine-tuning")
    parser.add_argument("--update-batchnorm", action="store_true",
                        help="fine-tuning: re-estimate BatchNorm statistics (default: keep them)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="evaluation cases per val pair (0: train only, e.g. with --save)")
    parser.add_argument("--save", type=Path, help="also save the trained model here (no suffix)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    parser.add_argument("--steps", type=int, help="train exactly this many steps (no time budget)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tau", type=float, help="temperature (default: the preset's 0.5)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--penalty", type=float, default=1e-4, help="L1 and L2 activation penalties")
    parser.add_argument("--c4-eval", action="store_true",
                        help="also report success with C4-averaged CoMIRs")
    parser.add_argument("--base-channels", type=int, default=8, help="U-Net width, from scratch")
    parser.add_argument("--no-c4", action="store_true", help="train without the C4 trick")
    parser.add_argument("--equivariance-weight", type=float, default=0.0,
                        help="weight of the arbitrary-angle equivariance term (default 0: off)")
    parser.add_argument("--turned-negatives", action="store_true",
                        help="partners turned by 90/180/270° as extra negatives")
    parser.add_argument("--schedule-steps", type=int, default=10_000,
                        help="steps the cosine learning-rate decay is planned for (default: so many "
                        "that the rate stays nearly constant within the budget)")
    args = parser.parse_args()
    everything = read_pairs_csv(args.data / "pairs.csv", ("bf", "shg"))
    train_pair = [p for p in everything if p.name == args.pair]
    val = [p for p in read_pairs_csv(args.data / "pairs.csv", ("bf", "shg"), split="val")
           if p.name != args.pair]
    torch.manual_seed(args.seed)
    model = (api.load_model(args.from_model, args.device) if args.from_model else
             api.new_model("bf-shg", architecture={"type": "unet", "base_channels": args.base_channels,
                                                   "depth": 4}))
    if args.tau:
        model.card.tau = args.tau
    if args.from_model and args.seeds:
        before, own = success_rate(model, val, args.seeds), success_rate(model, train_pair, args.seeds)
        print(f"before fine-tuning: val success {before[0]:.1f} %, median {before[1]:.2f} px; "
              f"{args.pair} itself {own[0]:.1f} %, {own[1]:.2f} px")
    fine_tuning = bool(args.from_model)
    config = TrainConfig(steps=args.steps or args.schedule_steps, batch_size=args.batch_size,
                         patch_size=args.patch_size, seed=args.seed, amp=False, device=args.device,
                         optimizer=args.optimizer, l1=args.penalty, l2=args.penalty,
                         lr=args.lr or (FINE_TUNE_LR if fine_tuning else 3e-3),
                         freeze_batchnorm=fine_tuning and not args.update_batchnorm,
                         equivariant=not args.no_c4, equivariance_weight=args.equivariance_weight,
                         turned_negatives=args.turned_negatives)
    start = time.perf_counter()
    run = api.fine_tune(model, train_pair, config, copy_model=False)
    for event in run:  # noqa: B007 (the last event is used below)
        if not args.steps and time.perf_counter() - start >= args.seconds:
            break
    run.close()
    elapsed = time.perf_counter() - start
    if args.save:
        save_model(model, args.save)
    if not args.seeds:
        print(f"trained {event.step} steps in {elapsed:.1f} s (loss {event.metrics['loss']:.3f})")
        return
    success, median = success_rate(model, val, args.seeds)
    own = success_rate(model, train_pair, args.seeds)
    print(f"{'fine-tuned' if args.from_model else 'from scratch'} on {args.pair}: {event.step} steps "
          f"in {elapsed:.1f} s (loss {event.metrics['loss']:.3f}); val ({len(val)} pairs x "
          f"{args.seeds} seeds, ±180°): success {success:.1f} %, median error {median:.2f} px; "
          f"{args.pair} itself (seen tissue): {own[0]:.1f} %, {own[1]:.2f} px")
    if not args.from_model:
        success, median = success_rate(model, val, args.seeds, "30")
        print(f"val, ±30°: success {success:.1f} %, median error {median:.2f} px")
    if args.c4_eval:
        model.card.c4_average = True
        success, median = success_rate(model, val, args.seeds)
        print(f"C4-averaged CoMIRs: val success {success:.1f} %, median error {median:.2f} px")


if __name__ == "__main__":
    main()
