"""A light live loss curve (QPainter; no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

#: The smallest loss drawn: InfoNCE on one pair falls to ~1e-6 within 20 steps, and a log
#: scale needs a floor.
FLOOR = 1e-8


def log_scale(values: list[float]) -> list[float]:
    """log10 of each value, floored at :data:`FLOOR` (a loss that falls by orders of magnitude
    stays readable)."""
    return [math.log10(max(v, FLOOR)) for v in values]


class LossPlot(QWidget):
    """Loss per step on a log scale, with a moving average so the noisy InfoNCE trend is visible."""

    def __init__(self, parent=None, smoothing: int = 10, hint: str = "loss curve (press Start)"):
        super().__init__(parent)
        self.values: list[float] = []
        self.smoothing = smoothing
        self.hint = hint  # shown before the first step
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (InfoNCE) per step, log scale; the bright line is a moving "
                        "average")

    def clear(self) -> None:
        self.values = []
        self.update()

    def append(self, value: float) -> None:
        if math.isfinite(value):
            self.values.append(float(value))
            self.update()

    def smoothed(self) -> list[float]:
        out, window = [], []
        for value in self.values:
            window = (window + [value])[-self.smoothing:]
            out.append(sum(window) / len(window))
        return out

    def paintEvent(self, event):  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        margin, width, height = 6, self.width() - 12, self.height() - 24
        painter.setPen(QColor(200, 200, 200))
        if not self.values:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.hint)
            return
        logs, smooth = log_scale(self.values), log_scale(self.smoothed())
        lo, hi = min(logs), max(logs)
        span = hi - lo or 1.0
        painter.drawText(margin, self.height() - 6,
                         f"step {len(self.values)} · loss {self.values[-1]:.2g} "
                         f"(from {self.values[0]:.2g}; log scale)")
        n = max(len(self.values) - 1, 1)

        def polygon(values):
            return QPolygonF([QPointF(margin + width * i / n, margin + height * (hi - v) / span)
                              for i, v in enumerate(values)])

        painter.setPen(QPen(QColor(90, 120, 160), 1))
        painter.drawPolyline(polygon(logs))
        painter.setPen(QPen(QColor(120, 200, 255), 2))
        painter.drawPolyline(polygon(smooth))
