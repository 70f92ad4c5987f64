"""Docking: the plugin's docks share one tabbed area instead of pushing each other off-screen."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow, QWidget

from ._connections import widget_deleted

#: Qt property marking the plugin's dock contents.
MARK = "napari_comir_dock"
#: Narrowest dock (px): its rows stay readable and the canvas keeps the rest of 1280 px.
DOCK_MIN_WIDTH = 380
#: Characters a choice box shows at least (its list shows whole names).
COMBO_MIN_CHARACTERS = 12
#: How long (ms) a docked dock may take to narrow the canvas before the layers are fitted again.
REFIT_WAIT_MS = 1000
#: How much further than the fit a view may be zoomed in and still be refitted when the first
#: dock narrows the canvas (napari's first fit, made on a wider canvas, is ~6 % further in).
REFIT_ZOOM_SLACK = 1.2


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


def tabify_with_siblings(container, viewer=None, *, tab_title: str) -> None:
    """Once ``container`` is docked, tab it with the plugin's other docks (a menu opens docks
    one under another otherwise, each pushing the others off a 1280 x 800 screen). The first
    takes its room from the canvas: ``viewer``'s layers are fitted to what is left (they were cut
    off at the dock's edge) unless a person had zoomed in.

    ``tab_title`` is the dock's short name on its tab: napari titles a dock "<widget>
    (napari-comir)", and six such titles side by side were cut to "CoM…" at 1280 x 800. The
    dock's own title bar keeps the full name."""
    native = container.native
    refit = viewer is not None and len(viewer.layers) > 0 and _not_zoomed_in(viewer)
    canvas_size = _canvas_size(viewer) if refit else None
    native.setProperty(MARK, True)
    native.setMinimumWidth(DOCK_MIN_WIDTH)
    for combo in native.findChildren(QComboBox):
        # A combo as wide as its longest choice (a long layer name) widened the dock past
        # 1280 x 800's room: it shows the start of a long name instead (all of it in its list).
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_MIN_CHARACTERS)

    def tabify() -> None:
        if widget_deleted(native):  # its window was closed in the meantime
            return
        dock = _dock_of(native)
        window = dock.parent() if dock is not None else None
        if not isinstance(window, QMainWindow):
            return
        dock.setWindowTitle(tab_title)  # the tab's text; napari's title bar has its own label
        siblings = [other for other in window.findChildren(QDockWidget)
                    if other is not dock and other.isVisible() and other.widget() is not None
                    and _marked(other.widget())]
        if siblings:
            window.tabifyDockWidget(siblings[0], dock)
            dock.show()
            dock.raise_()
        elif refit:
            _refit_once_narrowed(viewer, canvas_size)

    QTimer.singleShot(0, tabify)


def _canvas_size(viewer) -> tuple | None:
    """(height, width) of the canvas in screen px, or ``None`` where napari does not say."""
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9: the canvas model has its size
    size = canvas.size if canvas is not None and hasattr(canvas, "size") else getattr(
        viewer, "_canvas_size", None)
    return tuple(size) if size is not None else None


def _refit_once_narrowed(viewer, size_before: tuple | None) -> None:
    """Fit the layers to the canvas once it has given the dock its room: the canvas is resized
    when the dock is laid out, which may come after this turn of the event loop."""
    if size_before is None:  # no canvas model to follow (napari < 0.9)
        QTimer.singleShot(REFIT_WAIT_MS, viewer.reset_view)
        return
    if _canvas_size(viewer) != size_before:
        viewer.reset_view()
        return
    size_changed = viewer.canvas.events.size

    def refit(_event=None) -> None:
        size_changed.disconnect(refit)
        viewer.reset_view()

    size_changed.connect(refit)
    # A floating dock leaves the canvas as it was: a later resize is the person's, not ours.
    QTimer.singleShot(REFIT_WAIT_MS, lambda: size_changed.disconnect(refit))


def _not_zoomed_in(viewer) -> bool:
    """Whether the camera is zoomed in no further than fitting the layers to the canvas would
    (:data:`REFIT_ZOOM_SLACK`): a view a person zoomed into is kept. Not "exactly as napari fits
    them": napari fits the first layer to the canvas before the window is laid out, and keeps
    that zoom as the canvas shrinks and more layers come. The fit is tried and undone."""
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; ``viewer.camera`` before
    camera = scene.camera if scene is not None else viewer.camera
    centre, zoom = tuple(camera.center), camera.zoom
    viewer.reset_view()
    fitted_zoom = camera.zoom
    camera.center, camera.zoom = centre, zoom
    return zoom <= REFIT_ZOOM_SLACK * fitted_zoom


def _marked(widget: QWidget) -> bool:
    """Whether a dock's widget is (or holds) one of the plugin's."""
    return bool(widget.property(MARK)) or any(child.property(MARK)
                                               for child in widget.findChildren(QWidget))
