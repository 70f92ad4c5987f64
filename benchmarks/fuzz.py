"""A longer run of the fuzz suite (tests/test_fuzz.py): N drawn cases per test, and their outcomes.

Runs pytest on tests/test_fuzz.py with ``$NAPARI_COMIR_FUZZ_EXAMPLES=N`` (CI runs 8-25 per test)
and ``$NAPARI_COMIR_FUZZ_LOG`` set, then prints, per fuzzed command, how many cases exited 0
(a valid result), 1 (batch: some pairs failed, each recorded) or 2 (one-line refusal). Any
contract violation fails pytest, whose summary is printed too.

Usage: ``OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/fuzz.py [--examples 300]``
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="cases per fuzz test (default 300)")
    parser.add_argument("-k", default=None, help="only the tests matching this pytest -k expression")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "outcomes.csv"
        env = {**os.environ, "NAPARI_COMIR_FUZZ_EXAMPLES": str(args.examples),
               "NAPARI_COMIR_FUZZ_LOG": str(log), "OMP_WAIT_POLICY": "PASSIVE"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   str(ROOT / "tests" / "test_fuzz.py")] + (["-k", args.k] if args.k else [])
        start = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        counts = collections.Counter(tuple(line.split(",")) for line in log.read_text().split())
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:])
    print(f"{'test':10s} {'cases':>6s} {'exit 0':>7s} {'exit 1':>7s} {'exit 2':>7s}   ({seconds:.0f} s)")
    for test in sorted({test for test, _ in counts}):
        by_status = {status: n for (t, status), n in counts.items() if t == test}
        print(f"{test:10s} {sum(by_status.values()):6d} {by_status.get('0', 0):7d} "
              f"{by_status.get('1', 0):7d} {by_status.get('2', 0):7d}")
    if done.returncode:
        print(done.stdout[-4000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
