"""The final refinement by mutual information on the original images."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from napari_comir.core.registration import mutual_information as mutual_information_module
from napari_comir.core.registration.mutual_information import (
    mutual_information,
    refine_mutual_information,
)
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.core.transforms import AffineTransform, corner_error


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    fixed = rng.random(400)
    moving = np.clip(0.7 * fixed + 0.2 * rng.random(400), 0, 1)
    value, slope = mutual_information(fixed, moving)
    assert value > 0.1  # related samples share information
    step = 1e-6
    for i in range(0, 400, 40):
        bump = np.zeros(400)
        bump[i] = step
        numeric = (mutual_information(fixed, moving + bump)[0]
                   - mutual_information(fixed, moving - bump)[0]) / (2 * step)
        assert slope[i] == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_independent_samples_share_little_information():
    rng = np.random.default_rng(1)
    assert mutual_information(rng.random(20000), rng.random(20000))[0] < 0.02


@pytest.mark.parametrize("model", ["rigid", "affine"])
def test_refines_a_nearly_right_transform_across_modalities(model):
    """From 1.5° and 3 px off, the BF/SHG-like pair is brought within 3/4 px,
    under the model asked for."""
    bf_moved, shg, truth = misaligned_pair((256, 256), seed=3, angle_deg=12.0,
                                           translation_xy=(6.0, -4.0))
    start = AffineTransform.rigid(1.5, (3.0, -2.0)).compose(truth)
    before = corner_error(truth, start, bf_moved.shape[:2])
    found, value = refine_mutual_information(shg, bf_moved, start, model)
    after = corner_error(truth, found, bf_moved.shape[:2])
    assert before > 4 and after < 0.75
    assert found.model == model and value > 0


def _blas_threads() -> set[int]:
    return {library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"}


def test_runs_on_one_blas_thread_in_any_thread(monkeypatch):
    """OpenBLAS's idle threads busy-wait: the optimiser's loop runs on one, in the main thread
    and then in a worker thread (the GUI's), and the limit is lifted after each."""
    seen = []
    level = mutual_information_module._refine_level
    monkeypatch.setattr(mutual_information_module, "_refine_level",
                        lambda *args: (seen.append(_blas_threads()), level(*args))[1])
    bf_moved, shg, truth = misaligned_pair((96, 96), seed=1)
    before = _blas_threads()
    refine_mutual_information(shg, bf_moved, truth, "rigid")
    worker = threading.Thread(target=refine_mutual_information, args=(shg, bf_moved, truth, "rigid"))
    worker.start()
    worker.join(60)
    assert len(seen) == 4 and all(threads == {1} for threads in seen)
    assert _blas_threads() == before


def test_a_level_stops_once_the_optimiser_probes_around_its_best_point(monkeypatch):
    """Near the optimum L-BFGS's line search probes the sampled estimate's noise: the level
    stops there, with fewer evaluations than the optimiser left alone and the same answer
    within a twentieth of a pixel."""
    bf_moved, shg, truth = misaligned_pair((256, 256), seed=3, angle_deg=12.0,
                                           translation_xy=(6.0, -4.0))
    start = AffineTransform.rigid(1.5, (3.0, -2.0)).compose(truth)
    evaluations = []
    linear = mutual_information_module._Warp.linear
    monkeypatch.setattr(mutual_information_module._Warp, "linear",
                        lambda warp, q: (evaluations.append(q), linear(warp, q))[1])

    def refined(settled_step):
        monkeypatch.setattr(mutual_information_module, "SETTLED_STEP", settled_step)
        evaluations.clear()
        found, _ = refine_mutual_information(shg, bf_moved, start, "affine")
        return found, len(evaluations)

    settled_step = mutual_information_module.SETTLED_STEP
    left_alone, all_evaluations = refined(0.0)
    settled, fewer = refined(settled_step)
    assert fewer < all_evaluations
    assert corner_error(left_alone, settled, bf_moved.shape[:2]) < 0.05
    assert corner_error(truth, settled, bf_moved.shape[:2]) < 0.75
