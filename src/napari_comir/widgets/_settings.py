"""Choices that persist from one napari launch to the next: the last model, transform model,
rotation range and search method.

Stored as JSON beside napari's own settings file (its per-environment config folder), or at
``$NAPARI_COMIR_SETTINGS``. A missing or broken file is no settings; writes are atomic.
Pixel sizes are not kept here: they belong to each image (its file's metadata, the layer's
``scale``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..core.errors import ComirError
from ..core.io import write_text_atomic

SETTINGS_ENV = "NAPARI_COMIR_SETTINGS"
#: Each setting and the type its value must have (anything else in the file is ignored).
KEYS = {"model": str, "transform": str, "rotation_range": float, "method": str}


def settings_path() -> Path:
    if os.environ.get(SETTINGS_ENV):
        return Path(os.environ[SETTINGS_ENV])
    from napari.settings import get_settings

    return Path(get_settings().config_path).parent / "napari-comir.json"


def load_settings() -> dict:
    """The saved settings that are valid; {} when there are none."""
    try:
        saved = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    valid = {}
    for key, value in saved.items():
        kind = KEYS.get(key)
        accepted = (int, float) if kind is float else kind
        if kind is not None and isinstance(value, accepted) and not isinstance(value, bool):
            valid[key] = kind(value)
    return valid


def save_setting(key: str, value) -> None:
    """Remember one choice (best effort: an unwritable folder only means it is not kept)."""
    settings = {**load_settings(), key: value}
    path = settings_path()
    with contextlib.suppress(OSError, ComirError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(settings, indent=1) + "\n")


def restore(widget, key: str) -> None:
    """Set a magicgui value widget from the saved setting ``key`` (if valid for it), and save
    it whenever it changes."""
    saved = load_settings().get(key)
    if saved is not None:
        with contextlib.suppress(ValueError, TypeError):
            choices = getattr(widget, "choices", None)
            if choices is None or saved in choices:
                widget.value = saved
    widget.changed.connect(lambda value: save_setting(key, value))
