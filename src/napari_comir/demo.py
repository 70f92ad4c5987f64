"""The main job in one command: register the bundled sample pair, in napari or headless."""

from __future__ import annotations

import time

WIDGETS = ("CoMIR model", "CoMIR representations", "Register (CoMIR)", "Inspect CoMIRs",
           "Fine-tune CoMIR")


def run_demo(headless: bool = False, model: str = "bf-shg") -> int:
    """Register the synthetic misaligned BF/SHG sample pair with ``model``.

    Headless: print the found and true transforms and the corner error. Otherwise open
    napari with the sample pair and the plugin's dock widgets.
    """
    from .core.synthetic import misaligned_pair

    if not headless:
        return _open_napari()
    from . import api
    from .core.transforms import corner_error

    start = time.perf_counter()
    bf_moved, shg, truth = misaligned_pair()
    result = api.register_multimodal(shg, bf_moved, model)
    error = corner_error(truth, result.transform, bf_moved.shape[:2])
    print(f"sample pair {shg.shape[1]}x{shg.shape[0]} px, model {model}")
    print(f"  true  : angle {truth.angle_deg:8.3f}°  translation (x, y) "
          f"({truth.translation_xy[0]:8.2f}, {truth.translation_xy[1]:8.2f}) px")
    print(f"  found : angle {result.transform.angle_deg:8.3f}°  translation (x, y) "
          f"({result.transform.translation_xy[0]:8.2f}, {result.transform.translation_xy[1]:8.2f}) px")
    print(f"  corner error {error:.2f} px, score {result.score:.3f} "
          f"({'confident' if result.success_likely else 'LOW confidence'}), "
          f"registration {result.seconds:.2f} s, total {time.perf_counter() - start:.2f} s")
    success = error <= 0.02 * bf_moved.shape[1]
    print("  success" if success else "  FAILED: error above 2 % of the width")
    return 0 if success else 1


def setup_demo_viewer(viewer) -> None:
    """Open the misaligned sample pair in ``viewer`` and dock the plugin's widgets."""
    viewer.open_sample("napari-comir", "bf_shg_pair_misaligned")
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-comir", name, tabify=True)


def _open_napari() -> int:
    import napari

    setup_demo_viewer(napari.Viewer(title="napari-comir demo"))
    napari.run()
    return 0
