import numpy as np
from scipy import ndimage

from napari_comir.core.data import AlignedPair
from napari_comir.core.evaluation import SCENARIOS, Scenario, rigid_cases
from napari_comir.core.resampling import resample


def _pairs():
    rng = np.random.default_rng(0)
    shg = ndimage.gaussian_filter(rng.random((160, 160)), 3).astype(np.float32)  # smooth: resampling keeps it
    return [AlignedPair({"shg": shg, "bf": np.dstack([shg] * 3)}, name=str(i)) for i in range(2)]


def test_rigid_cases_are_reproducible_and_truthful():
    scenario = Scenario(crop=96, max_angle=180.0, max_shift=10.0)
    first, second = list(rigid_cases(_pairs(), scenario, 3)), list(rigid_cases(_pairs(), scenario, 3))
    assert len(first) == 6 and [c.pair_index for c in first] == [0, 0, 0, 1, 1, 1]
    assert all(np.array_equal(a.moving, b.moving) for a, b in zip(first, second, strict=True))
    case = first[1]
    back = resample(case.moving[..., 0], case.truth, case.fixed.shape)
    inner = slice(30, 66)
    assert np.corrcoef(back[inner, inner].ravel(), case.fixed[inner, inner].ravel())[0, 1] > 0.95


def test_hard_scenario_degrades_both_images():
    assert SCENARIOS["hard"].noisy and SCENARIOS["hard"].success_px == 0.02 * 256
    clean = Scenario(crop=96, max_angle=0.0, max_shift=0.0)
    noisy = Scenario(crop=96, max_angle=0.0, max_shift=0.0, noisy=True)
    (a,), (b,) = rigid_cases(_pairs()[:1], clean, 1), rigid_cases(_pairs()[:1], noisy, 1)
    assert not np.allclose(a.fixed, b.fixed) and not np.allclose(a.moving, b.moving)
