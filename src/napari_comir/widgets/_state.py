"""The model state of a viewer: the CoMIR model all of its dock widgets use.

One :class:`ModelState` per napari viewer (:func:`state_for`), so two viewers can work with two
models. Saving a user model is announced to every viewer through :data:`library`, since the
models folder is shared.
"""

from __future__ import annotations

import contextlib
import weakref

from psygnal import Signal

from .. import api
from ..core.defaults import DEFAULT_MODEL_NAME
from ..core.device import resolve_device
from ..core.errors import ComirError, ModelFileError
from ..core.zoo import ComirModel
from ._settings import load_settings, save_setting


class ModelLibrary:
    """Announces user models saved from any viewer, so every model list refreshes."""

    models_saved = Signal(str)  # the name of a model just saved


class ModelState:
    """Evented holder of a viewer's model; its widgets connect to ``changed``."""

    changed = Signal(object)  # the new ComirModel

    def __init__(self):
        self.model: ComirModel | None = None
        self.source: str | None = None  # name or path it was loaded from
        self.device: str = "auto"

    def load(self, name_or_path: str, device: str | None = None) -> ComirModel:
        """Load a model by name or path and make it current (raises ComirError on failure); a
        named model is remembered for the next launch."""
        self.device = device or self.device
        model = api.load_model(str(name_or_path), self.device)
        self.set(model, str(name_or_path))
        if str(name_or_path) in api.list_models():
            save_setting("model", str(name_or_path))
        return model

    def set(self, model: ComirModel, source: str | None = None) -> None:
        self.model, self.source = model, source or model.card.name
        self.changed.emit(model)

    def set_device(self, device: str) -> None:
        """Move the current model (if any) to ``device``."""
        torch_device = resolve_device(device)  # raises InputError before anything changes
        self.device = device
        if self.model is not None:
            self.model.to(torch_device)
            self.changed.emit(self.model)

    @staticmethod
    def default_name() -> str | None:
        """The model a new viewer starts with: the last one chosen (a saved setting), else
        bundled bf-shg, else the first listed one."""
        names = list(api.list_models())
        for name in (load_settings().get("model"), DEFAULT_MODEL_NAME):
            if name in names:
                return name
        return names[0] if names else None

    def get(self) -> ComirModel:
        """The viewer's model; on first use loads :meth:`default_name`."""
        if self.model is None:
            name = self.default_name()
            if name is None:
                raise ModelFileError("no CoMIR model available: choose a model file in the "
                                     "'CoMIR model' widget or fine-tune one")
            self.load(name)
        return self.model


#: Saved models, for every viewer.
library = ModelLibrary()
_STATES: dict[int, ModelState] = {}


def real_viewer(viewer):
    """The viewer behind the proxy napari hands a plugin's widget. The proxy makes a new proxy of
    every layer each time one is looked up, so a layer remembered is never ``is`` the same layer
    looked up again (a deleted accepted layer went unnoticed), and each dock gets its own proxy
    (one viewer's docks would not share a state keyed by it)."""
    return getattr(viewer, "__wrapped__", viewer)


def state_for(viewer) -> ModelState:
    """The model state of ``viewer``, made on first use (with :meth:`ModelState.default_name`
    loaded, so every widget shows the model in use at once) and dropped with the viewer."""
    viewer = real_viewer(viewer)
    key = id(viewer)
    if key not in _STATES:
        state = _STATES[key] = ModelState()
        weakref.finalize(viewer, _STATES.pop, key, None)
        name = state.default_name()
        if name is not None:
            with contextlib.suppress(ComirError):  # a broken model file: the widgets say so later
                state.load(name)
    return _STATES[key]
