"""The plugin is found by npe2 from the installed distribution and from a built wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_from_installed_distribution():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-comir")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {"CoMIR model", "Fine-tune CoMIR", "CoMIR representations", "Register (CoMIR)",
            "Inspect CoMIRs"} <= widgets
    assert manifest.contributions.readers and manifest.contributions.writers
    assert len(manifest.contributions.sample_data) == 2


def test_top_level_manifest_is_the_package_manifest():
    assert (ROOT / "napari.yaml").resolve() == (ROOT / "src" / "napari_comir" / "napari.yaml").resolve()


def test_wheel_carries_manifest_and_bundled_models(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-300:]}")
    (wheel,) = tmp_path.glob("napari_comir-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "napari_comir/napari.yaml" in names
    for model in ("bf-shg", "rgb-nir", "he-ihc"):
        assert {f"napari_comir/models/{model}.json", f"napari_comir/models/{model}.safetensors"} <= names
    assert "napari-comir = napari_comir:napari.yaml" in entry_points


def test_widgets_are_in_the_layers_register_menu():
    from npe2 import PluginManifest

    menus = PluginManifest.from_distribution("napari-comir").contributions.menus
    assert [item.submenu for item in menus["napari/layers/register"]] == ["comir_submenu"]
    assert {item.command for item in menus["comir_submenu"]} == {"napari-comir.guided_dock"} | {
        f"napari-comir.{name}_widget"
        for name in ("model", "fine_tune", "representations", "register", "inspect")}
