"""GPU numbers: end-to-end registration per pair, CoMIR inference throughput, training throughput.

Runs everything on one CUDA device (default ``cuda``) and prints one table per measurement:

- registration: ``api.register_multimodal`` on val cases (300², ±180°, |t| ≤ 20 and the 512²
  whole pair), mean / median milliseconds per pair after warm-up, success and median error as a
  sanity check, default and C4-averaged CoMIRs;
- CUDA graphs: both CoMIRs of a 300² crop with and without them;
- inference: one CoMIR of a BF (RGB) and an SHG image of 512², 2048², 8192²: megapixels/s and
  peak GPU memory;
- training: patch pairs/s of the shipped architecture (128² patches, C4 trick, AMP) at two
  batch sizes, with and without the arbitrary-angle equivariance term.

Usage: ``python benchmarks/gpu.py [--data ../shared/data] [--device cuda]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_comir import api
from napari_comir.core.data import read_pairs_csv
from napari_comir.core.evaluation import SCENARIOS, make_rigid_case, rigid_cases
from napari_comir.core.inference import compute_comir
from napari_comir.core.training import TrainConfig, train
from napari_comir.core.transforms import corner_error

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def registration_timing(model, pairs, device, seeds: int) -> None:
    print("\n| case | CoMIRs | success | median error px | mean ms / pair | median ms | "
          "CoMIR ms | search ms | refine ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    scenario = SCENARIOS["180"]
    cases = list(rigid_cases(pairs, scenario, seeds))
    whole = [make_rigid_case(p.images["shg"], p.images["bf"], 37.0, (5.0, -3.0), 512) for p in pairs]
    for c4 in (False, True):
        model.card.c4_average = c4
        for label, items in (("300², ±180°", [(c.fixed, c.moving, c.truth) for c in cases]),
                             ("512² whole pair", whole)):
            for fixed, moving, _ in items[:3]:  # warm-up: cuDNN autotuning, allocator
                api.register_multimodal(fixed, moving, model)
            seconds, errors, phases = [], [], {}
            for fixed, moving, truth in items:
                _sync(device)
                tic = time.perf_counter()
                result = api.register_multimodal(fixed, moving, model)
                _sync(device)
                seconds.append(time.perf_counter() - tic)
                errors.append(corner_error(truth, result.transform, moving.shape[:2]))
                for name, value in result.timings.items():
                    phases.setdefault(name, []).append(value)
            success = 100 * np.mean(np.array(errors) <= 0.02 * items[0][1].shape[0])
            ms = [1000 * s for s in seconds]
            phase_ms = [1000 * statistics.median(phases.get(k, [float("nan")]))
                        for k in ("comir", "search", "refine")]
            print(f"| {label} | {'C4-averaged' if c4 else 'plain'} | {success:.1f} % | "
                  f"{np.median(errors):.2f} | {np.mean(ms):.1f} | {np.median(ms):.1f} | "
                  + " | ".join(f"{v:.1f}" for v in phase_ms) + " |", flush=True)
    model.card.c4_average = False


def graph_ablation(model, pair, device, reps: int = 20) -> None:
    """Both CoMIRs of a 300² crop with and without CUDA graphs: median ms after warm-up."""
    print("\n| both CoMIRs, 300² | CUDA graphs | median ms |")
    print("|---|---|---|")
    fixed, moving = pair.images["shg"][:300, :300], pair.images["bf"][:300, :300]
    for graphs in (False, True):
        times = []
        for rep in range(reps + 3):
            _sync(device)
            tic = time.perf_counter()
            api.compute_comirs(model, fixed, moving, cuda_graphs=graphs)
            _sync(device)
            if rep >= 3:
                times.append(1000 * (time.perf_counter() - tic))
        print(f"| plain | {'on' if graphs else 'off'} | {statistics.median(times):.1f} |", flush=True)


def profile_registration(model, pairs, device, rows: int = 25) -> None:
    """Operator table (host and device time) of ten 300² registrations: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    cases = list(rigid_cases(pairs, SCENARIOS["180"], 3))[:10]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for case in cases:
            api.register_multimodal(case.fixed, case.moving, model)
        _sync(device)
    # On a GPU the host, launching operations, is the bottleneck: sort by host time.
    print("\n```\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
          + "\n```")


def inference_throughput(model, pair, device, sizes) -> None:
    print("\n| image | modality | seconds | MP/s | peak GPU memory GB |")
    print("|---|---|---|---|---|")
    for size in sizes:
        for modality in ("bf", "shg"):
            source = pair.images[modality]
            reps = -(-size // source.shape[0])
            tiling = (reps, reps, 1) if source.ndim == 3 else (reps, reps)
            image = np.tile(source, tiling)[:size, :size]
            compute_comir(model, image[:512, :512], modality)  # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            tic = time.perf_counter()
            compute_comir(model, image, modality)
            _sync(device)
            seconds = time.perf_counter() - tic
            peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
            print(f"| {size}² | {modality} | {seconds:.3f} | {size * size / 1e6 / seconds:.1f} | "
                  f"{peak:.2f} |", flush=True)


def training_throughput(pairs, device, steps: int) -> None:
    print("\n| batch | equivariance term | patch pairs / s | ms / step |")
    print("|---|---|---|---|")
    for batch_size in (32, 64):
        for weight in (0.0, 1.0):
            torch.manual_seed(0)
            model = api.new_model("bf-shg")
            config = TrainConfig(steps=steps, batch_size=batch_size, device=str(device),
                                 equivariance_weight=weight)
            stamps = []
            for _ in train(model, pairs, config):
                _sync(device)
                stamps.append(time.perf_counter())
            warm = 5
            per_step = (stamps[-1] - stamps[warm]) / (len(stamps) - 1 - warm)
            print(f"| {batch_size} | {'on' if weight else 'off'} | {batch_size / per_step:.0f} | "
                  f"{1000 * per_step:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding bf_shg/pairs.csv")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="bf-shg")
    parser.add_argument("--seeds", type=int, default=5, help="cases per val pair (registration)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--train-steps", type=int, default=40, help="0 skips the training throughput")
    parser.add_argument("--profile", action="store_true", help="also print an operator profile")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {name}")
    csv = args.data / "bf_shg" / "pairs.csv"
    val = read_pairs_csv(csv, ("bf", "shg"), split="val")
    model = api.load_model(args.model, str(device))
    registration_timing(model, val, device, args.seeds)
    if device.type == "cuda":
        graph_ablation(model, val[0], device)
    if args.profile:
        profile_registration(model, val, device)
    inference_throughput(model, val[0], device, args.sizes)
    if args.train_steps:
        training_throughput(read_pairs_csv(csv, ("bf", "shg"), split="train"), device, args.train_steps)


if __name__ == "__main__":
    main()
