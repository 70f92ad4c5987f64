"""Docking: the plugin's docks share one tabbed area instead of pushing each other off-screen."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow, QWidget

#: Qt property marking the plugin's dock contents.
MARK = "napari_comir_dock"
#: Narrowest dock (px): its rows stay readable and the canvas keeps the rest of 1280 px.
DOCK_MIN_WIDTH = 380
#: Characters a choice box shows at least (its list shows whole names).
COMBO_MIN_CHARACTERS = 12


class ScrollingDock:
    """Mixin for a scrollable magicgui Container docked in napari: napari docks a widget's
    ``native``, which for a scrollable container is the inner widget — the scroll area would be
    lost and a long dock would grow the window past the screen. Here ``native`` is the scroll
    area (magicgui itself works on its backend widget, not on ``native``)."""

    @property
    def native(self):
        return self.root_native_widget

    def stretch_below(self) -> None:
        """Spare height below the last row, not between rows (a list would take it all)."""
        self.root_native_widget.widget().layout().addStretch(1)


def _dock_of(widget) -> QDockWidget | None:
    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parent()
    return widget


def tabify_with_siblings(container) -> None:
    """Once ``container`` is docked, tab it with the plugin's other docks (a menu opens docks
    one under another otherwise, each pushing the others off a 1280 x 800 screen)."""
    native = container.native
    native.setProperty(MARK, True)
    native.setMinimumWidth(DOCK_MIN_WIDTH)
    for combo in native.findChildren(QComboBox):
        # A combo as wide as its longest choice (a long layer name) widened the dock past
        # 1280 x 800's room: it shows the start of a long name instead (all of it in its list).
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_MIN_CHARACTERS)

    def tabify() -> None:
        dock = _dock_of(native)
        window = dock.parent() if dock is not None else None
        if not isinstance(window, QMainWindow):
            return
        siblings = [other for other in window.findChildren(QDockWidget)
                    if other is not dock and other.isVisible() and other.widget() is not None
                    and _marked(other.widget())]
        if siblings:
            window.tabifyDockWidget(siblings[0], dock)
            dock.show()
            dock.raise_()

    QTimer.singleShot(0, tabify)


def _marked(widget: QWidget) -> bool:
    """Whether a dock's widget is (or holds) one of the plugin's."""
    return bool(widget.property(MARK)) or any(child.property(MARK)
                                               for child in widget.findChildren(QWidget))
