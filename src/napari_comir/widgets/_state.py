"""The "current model" shared by all dock widgets (chosen in the Model widget)."""

from __future__ import annotations

from psygnal import Signal

from .. import api
from ..core.defaults import DEFAULT_MODEL_NAME
from ..core.device import resolve_device
from ..core.errors import ModelFileError
from ..core.zoo import ComirModel


class ModelState:
    """Evented holder of the current model; widgets connect to ``changed`` and ``models_saved``."""

    changed = Signal(object)  # the new ComirModel
    models_saved = Signal(str)  # name of a model just saved, so model lists refresh

    def __init__(self):
        self.model: ComirModel | None = None
        self.source: str | None = None  # name or path it was loaded from
        self.device: str = "auto"

    def load(self, name_or_path: str, device: str | None = None) -> ComirModel:
        """Load a model by name or path and make it current (raises ComirError on failure)."""
        self.device = device or self.device
        model = api.load_model(str(name_or_path), self.device)
        self.set(model, str(name_or_path))
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

    def get(self) -> ComirModel:
        """The current model; on first use loads bundled bf-shg, else the first listed model."""
        if self.model is None:
            names = list(api.list_models())
            if not names:
                raise ModelFileError("no CoMIR model available: choose a model file in the "
                                     "'CoMIR model' widget or fine-tune one")
            self.load(DEFAULT_MODEL_NAME if DEFAULT_MODEL_NAME in names else names[0])
        return self.model


#: The one state of this napari session.
current = ModelState()
