"""Connections from long-lived signals (a viewer's session, the model library, a layer's events)
to a dock's panels, which a person may close at any time."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable


def connect_while_alive(signal, slot: Callable, widget) -> None:
    """Call ``slot`` on ``signal`` (psygnal or napari events) while ``widget``'s Qt side lives;
    after that the connection drops itself at the signal's next emission.

    A bound method is held weakly: a panel no longer used is freed. This replaces disconnecting
    on Qt's ``destroyed`` signal: when Python's garbage collector frees a panel, Qt emits it
    from inside the collection, and the callback touching the half-freed panel crashed the
    program (a segfault in napari's test teardown).
    """
    target = weakref.WeakMethod(slot) if inspect.ismethod(slot) else lambda: slot
    native = widget.native

    def call(*args):
        bound = target()
        if bound is None or widget_deleted(native):
            signal.disconnect(call)
            return
        bound(*args)

    signal.connect(call)


def widget_deleted(native) -> bool:
    """Whether Qt has deleted the widget behind the Python wrapper ``native``."""
    try:
        native.objectName()
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        return True
    return False
