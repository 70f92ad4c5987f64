"""Bounded memory by shape: `register` with the bundled bf-shg model, one fresh process per shape,
peak resident memory (``ru_maxrss``) within the cap stated in docs/reliability.md
(``benchmarks/memory.py``: 900 MiB + 64 B per pixel of the two images), for a square pair, a pair
at the 8:1 limit (grey moving image) and one beyond it (refused before any work; 64 x 4096 once
took 9.9 GiB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"


@pytest.fixture(scope="module")
def memory():
    spec = importlib.util.spec_from_file_location("memory_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("shape", "grey"), [("512x512", False), ("128x1024", True),
                                             ("256x4096", False)])
def test_register_peak_memory_is_within_the_cap(memory, shape, grey):
    record = memory.measure(shape, grey, timeout=120)
    cap = memory.memory_cap_mib(record["pixels"])
    assert record["peak_mib"] <= cap, record
    if shape == "256x4096":  # 16:1: refused before the CoMIRs (before: after them, 2.1 s, 466 MiB)
        assert "too thin to register" in record["refused"], record
        assert record["seconds"] < 0.5, record
    else:
        assert "refused" not in record, record
