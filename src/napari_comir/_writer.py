"""npe2 writer: the rigid transform found by CoMIR registration of an image layer, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .core.defaults import TRANSFORM_KEY
from .core.errors import InputError
from .core.io import write_text_atomic
from .core.transforms import AffineTransform

#: Layer metadata key under which the Register widget stores ``AffineTransform.to_dict()``.


def write_transform(path: str, data, attributes: dict) -> list[str]:
    """Write the registration result of one image layer to a JSON file, atomically.

    Parameters
    ----------
    path : str
        Output file; ``.json`` is appended when it has another extension.
    data : array-like
        The layer data (unused: only the transform is written).
    attributes : dict
        Layer attributes; ``attributes["metadata"]["comir_transform"]`` must hold the moving ->
        fixed transform as a dict (``AffineTransform.to_dict()``: ``matrix_xy`` acting on
        (x, y) = (col, row), or ``angle_deg`` and ``translation_xy``).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    InputError
        When the layer has no registration result or it is not a rigid transform.
    """
    stored = (attributes.get("metadata") or {}).get(TRANSFORM_KEY)
    name = attributes.get("name", "layer")
    if stored is None:
        raise InputError(f"layer {name!r} has no CoMIR registration result; run Register first")
    # Validate and canonicalise the matrix; keep any extra fields the widget stored (e.g. scores).
    payload = {**stored, **AffineTransform.from_dict(stored).to_dict(), "moving_layer": name}
    path = Path(path)
    if path.suffix.lower() != ".json":
        path = path.with_name(path.name + ".json")
    write_text_atomic(path, json.dumps(payload, indent=2, default=_to_builtin) + "\n")
    return [str(path)]


def _to_builtin(value):
    """JSON fallback for numpy scalars and arrays left in the stored metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
