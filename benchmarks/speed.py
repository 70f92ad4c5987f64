"""Training throughput and CoMIR inference time on this machine, under several threading settings.

Each setting runs in a fresh subprocess, because OMP_WAIT_POLICY only takes effect before torch
is imported. Prints patch pairs/s for training (default architecture, batch 16, 128² patches,
C4 trick on) and seconds for both CoMIRs of a 512² BF/SHG pair.

``--load N`` keeps N busy processes running meanwhile, like a laptop doing other work.

Usage: ``python benchmarks/speed.py [--steps 10] [--settings PASSIVE:2,ACTIVE:2,PASSIVE:1] [--load 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np, torch
threads = int(sys.argv[1]); steps = int(sys.argv[2])
torch.set_num_threads(threads)
from napari_comir import api
from napari_comir.core.data import AlignedPair
from napari_comir.core.synthetic import synthetic_pair
from napari_comir.core.training import TrainConfig, train
torch.manual_seed(0)
bf, shg = synthetic_pair()
model = api.new_model("bf-shg")
times = [time.perf_counter()]
for _ in train(model, [AlignedPair({"bf": bf, "shg": shg})],
               TrainConfig(steps=steps + 2, batch_size=16, device="cpu")):
    times.append(time.perf_counter())
train_pps = 16 * steps / (times[-1] - times[2])  # skip 2 warm-up steps
api.compute_comirs(model, shg, bf)
tic = time.perf_counter()
for _ in range(5):
    api.compute_comirs(model, shg, bf)
print(json.dumps({"train_pairs_per_s": train_pps, "comirs_512_s": (time.perf_counter() - tic) / 5}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--settings", default="PASSIVE:2,ACTIVE:2,PASSIVE:1")
    parser.add_argument("--load", type=int, default=0, help="busy background processes")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        _measure(args)
    finally:
        for hog in hogs:
            hog.kill()


def _measure(args) -> None:
    print(f"{'OMP_WAIT_POLICY':16s} {'threads':>7s} {'train pairs/s':>13s} {'CoMIRs 512² s':>13s}")
    for setting in args.settings.split(","):
        policy, threads = setting.split(":")
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, "-c", WORKER, threads, str(args.steps)], env=env,
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{policy:16s} {threads:>7s} {result['train_pairs_per_s']:13.1f} "
              f"{result['comirs_512_s']:13.3f}", flush=True)


if __name__ == "__main__":
    main()
