"""The core must stay GUI-free: importing every core module pulls in neither Qt nor napari."""

import subprocess
import sys
from pathlib import Path

import napari_comir

CORE = Path(napari_comir.__file__).parent / "core"


def test_core_imports_no_qt_or_napari():
    modules = [f"napari_comir.core.{p.stem}" for p in sorted(CORE.glob("*.py")) if p.stem != "__init__"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "import napari_comir.api, napari_comir.cli\n"
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) >= 10
    assert out.stdout.strip() == ""


def test_package_import_is_lazy():
    """napari imports the plugin package at start-up: that alone must not import torch."""
    code = "import sys, napari_comir; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_top_level_names_resolve():
    """Every name the package advertises is importable from it (lazily, through the API)."""
    missing = [name for name in napari_comir.__all__ if not hasattr(napari_comir, name)]
    assert missing == []
