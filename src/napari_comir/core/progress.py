"""The one progress-event type shared by training, inference and batch registration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One step of a long-running job.

    Parameters
    ----------
    stage : str
        What is running, e.g. ``"train"``, ``"infer"``, ``"batch"``.
    step : int
        Steps done so far (1-based once the first step finished).
    total : int
        Total number of steps expected (0 when unknown).
    message : str
        Short human-readable status.
    metrics : dict
        Numbers of this step, e.g. ``{"loss": 3.1, "lr": 1e-3, "patches_per_s": 40.0}``.
    result : Any
        Set on the final event of a job when it produces something (a model, an array...).
    """

    stage: str
    step: int
    total: int
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    result: Any = None

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1] (0 when the total is unknown)."""
        return min(self.step / self.total, 1.0) if self.total else 0.0
