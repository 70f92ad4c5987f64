"""What a batch registers and what it keeps: pair jobs, shared settings and per-pair records.

A :class:`PairJob` is one row of the pairs CSV (:func:`read_jobs`); :class:`BatchSettings` are
the model and registration options every pair of a batch shares; a :class:`PairRecord` is the
outcome of one pair, stored as one flat JSON object (:meth:`PairRecord.to_dict`) and one row
of ``results.csv`` (:meth:`PairRecord.to_row`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.defaults import DEFAULT_TILE_COMPRESSION
from ..core.errors import InputError
from ..core.io import file_fingerprint

if TYPE_CHECKING:
    from ..core.registration import RegistrationResult
    from ..core.zoo import ModelCard
    from ..pipeline import RegistrationOptions

RESULT_COLUMNS = ("pair", "status", "transform", "angle_deg", "scale_x", "scale_y", "shear", "tx",
                  "ty", "score", "detail_score", "success_likely", "reasons", "deformable", "seconds",
                  "matrix_xy", "error", "fixed", "moving", "resampled", "field", "model",
                  "model_sha256", "method", "rotation_range", "scale_range", "worker")


@dataclass(frozen=True)
class PairJob:
    """One pair to register.

    Attributes
    ----------
    name : str
        The pair's name (``"pair"`` in records and results.csv).
    stem : str
        File-name-safe name: the record is ``pairs/<stem>.json``, unique within a batch.
    fixed, moving : str
        Absolute image paths.
    fixed_fingerprint, moving_fingerprint : str
        :func:`~napari_comir.core.io.file_fingerprint` of each image: the images' content, not
        only their paths, decides whether a record can be reused.
    resampled : str
        Where to write the resampled moving image; empty for none.
    field : str
        Where to write a deformable result's transform (``.npz``, when the field is kept);
        empty for affine batches.
    compression : str
        How the resampled TIFF's tiles are compressed (one of
        :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS`).
    """

    name: str
    stem: str
    fixed: str
    moving: str
    fixed_fingerprint: str
    moving_fingerprint: str
    resampled: str = ""
    field: str = ""
    compression: str = DEFAULT_TILE_COMPRESSION

    def to_dict(self) -> dict:
        """The job's fields under their record keys (``name`` is ``"pair"``)."""
        data = asdict(self)
        data["pair"] = data.pop("name")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PairJob:
        """The job a record was made for (inverse of :meth:`to_dict`)."""
        return cls(name=data["pair"], **{field.name: data.get(field.name, field.default)
                                         for field in fields(cls) if field.name != "name"})


@dataclass(frozen=True)
class BatchSettings:
    """The model and registration options shared by every pair of a batch.

    Attributes
    ----------
    model, model_sha256 : str
        The model card's name and weights' SHA-256.
    method, transform_model, rotation_range, scale_range
        ``method``, ``transform``, ``rotation_range`` and ``scale_range`` of
        :class:`napari_comir.pipeline.RegistrationOptions`.
    """

    model: str
    model_sha256: str
    method: str
    transform_model: str
    rotation_range: float
    scale_range: list[float] | None = None

    @classmethod
    def from_options(cls, card: ModelCard, options: RegistrationOptions) -> BatchSettings:
        """The settings of a batch with ``card``'s model and these options.

        Raises
        ------
        InputError
            Options a batch does not take: each pair's pixel sizes come from its files.
        """
        per_pair = {"fixed_pixel_size", "moving_pixel_size", "fixed_modality", "moving_modality",
                 "initial_transform", "device"}
        given = sorted(name for name in per_pair if getattr(options, name) is not None)
        if given:
            raise InputError(f"a batch takes method, transform, rotation_range and scale_range, "
                             f"not {', '.join(given)} (each pair's pixel sizes come from its files)")
        scale_range = options.scale_range
        return cls(model=card.name, model_sha256=card.sha256, method=options.method,
                   transform_model=options.transform, rotation_range=float(options.rotation_range),
                   scale_range=None if scale_range is None else [float(v) for v in scale_range])

    def options(self) -> RegistrationOptions:
        """The registration options every pair of the batch is registered with."""
        from ..pipeline import RegistrationOptions

        return RegistrationOptions(method=self.method, transform=self.transform_model,
                                   rotation_range=self.rotation_range, scale_range=self.scale_range)

    def to_dict(self) -> dict:
        """The settings under their record keys."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BatchSettings:
        """The settings a record was made with (inverse of :meth:`to_dict`)."""
        return cls(**{field.name: data[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class RegistrationSummary:
    """The transform and verdict of a registered pair, as results.csv lists them.

    ``transform`` is the model ("deformable" when a field was kept); the angle, scales, shear,
    shift and ``matrix_xy`` are those of the affine part; ``deformable`` says what the
    deformable stage did ("" when none ran).
    """

    transform: str
    angle_deg: float
    scale_x: float
    scale_y: float
    shear: float
    tx: float
    ty: float
    score: float
    detail_score: float
    success_likely: bool
    reasons: str
    matrix_xy: list[list[float]]
    deformable: str = ""

    @classmethod
    def from_result(cls, result: RegistrationResult) -> RegistrationSummary:
        """Read a registration result as rotation, scale, shear, shift and verdict."""
        from ..core.registration.deformable import displacement_text

        transform = getattr(result.transform, "affine", result.transform)
        parts = transform.decompose(result.moving_centre_xy)
        stage = result.deformable
        deformable = "" if stage is None else (
            f"field kept: points moved {displacement_text(stage)}, detail gain "
            f"{stage['detail_gain']:.1f}" if stage["kept"] else "; ".join(stage["reasons"]))
        return cls(transform=result.transform.model, angle_deg=parts.angle_deg,
                   scale_x=parts.scale_xy[0], scale_y=parts.scale_xy[1], shear=parts.shear,
                   tx=transform.translation_xy[0], ty=transform.translation_xy[1],
                   score=result.score, detail_score=result.detail_score,
                   success_likely=result.success_likely, reasons="; ".join(result.reasons),
                   matrix_xy=transform.matrix_xy.tolist(), deformable=deformable)


@dataclass(frozen=True)
class PairRecord:
    """What became of one pair: ``status`` ``"ok"`` with its ``summary``, or ``"error"``.

    Attributes
    ----------
    job : PairJob
    settings : BatchSettings
    status : str
        ``"ok"`` or ``"error"``.
    error : str
        One-line reason of an error; empty when ok.
    seconds : float or None
        Time the worker spent on the pair; None when the worker never finished it.
    worker : str
        ``host:pid`` of the worker; empty when unknown.
    summary : RegistrationSummary or None
        The registration, when ok.
    """

    job: PairJob
    settings: BatchSettings
    status: str
    error: str = ""
    seconds: float | None = None
    worker: str = ""
    summary: RegistrationSummary | None = None

    @property
    def message(self) -> str:
        """One line for a progress event: the pair, its status and score or error."""
        detail = f"score {self.summary.score:.3f}" if self.status == "ok" else self.error
        return f"{self.job.name}: {self.status} ({detail})"

    def to_dict(self) -> dict:
        """The flat JSON record: job, settings, outcome and, when ok, the summary's fields."""
        data = {**self.job.to_dict(), **self.settings.to_dict(), "status": self.status,
                "error": self.error, "seconds": self.seconds, "worker": self.worker}
        if self.summary is not None:
            data.update(asdict(self.summary))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PairRecord:
        """A record read back from its JSON (inverse of :meth:`to_dict`).

        Raises
        ------
        KeyError, TypeError
            Not a record.
        """
        summary_keys = [field.name for field in fields(RegistrationSummary)]
        summary = (RegistrationSummary(**{key: data[key] for key in summary_keys if key in data})
                   if data["status"] == "ok" else None)
        return cls(PairJob.from_dict(data), BatchSettings.from_dict(data), data["status"],
                   data.get("error", ""), data.get("seconds"), data.get("worker", ""), summary)

    def to_row(self) -> dict:
        """The results.csv row (columns :data:`RESULT_COLUMNS`; ``matrix_xy`` as JSON text)."""
        data = self.to_dict()
        if self.summary is not None:
            data["matrix_xy"] = json.dumps(data["matrix_xy"])
        return {column: data.get(column) for column in RESULT_COLUMNS}


def safe_name(name: str) -> str:
    """A file-name-safe version of a pair name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "pair"


def read_jobs(pairs_csv: Path, fixed_column: str, moving_column: str) -> list[PairJob]:
    """One job per row of the pairs CSV, in CSV order, without resampled paths.

    Parameters
    ----------
    pairs_csv : Path
        CSV with columns ``fixed_column``, ``moving_column`` (image paths, relative to the CSV)
        and optionally ``name`` (default: the fixed file's stem).
    fixed_column, moving_column : str
        Columns of the fixed and moving images.

    Returns
    -------
    list of PairJob
        With absolute paths and fingerprints; names unique.

    Raises
    ------
    InputError
        Missing or unreadable CSV, missing column, no rows, empty path, repeated name.
    """
    if not pairs_csv.is_file():
        raise InputError(f"no such pairs file: {pairs_csv}")
    try:
        with open(pairs_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{pairs_csv.name}: not a readable CSV ({exc})") from exc
    missing = [c for c in (fixed_column, moving_column) if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"{pairs_csv.name}: need a header with column(s) {', '.join(missing)} "
                         "and at least one row")
    jobs, names = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        if not row[fixed_column] or not row[moving_column]:
            raise InputError(f"{pairs_csv.name} line {number}: "
                             f"empty {fixed_column} or {moving_column}")
        name = row.get("name") or Path(row[fixed_column]).stem
        stem = safe_name(name)
        if stem in names:
            raise InputError(f"{pairs_csv.name} line {number}: pair name {name!r} repeats "
                             f"{names[stem]!r}; names must be unique")
        names[stem] = name
        fixed = (pairs_csv.parent / row[fixed_column]).resolve()
        moving = (pairs_csv.parent / row[moving_column]).resolve()
        jobs.append(PairJob(name, stem, str(fixed), str(moving), file_fingerprint(fixed),
                            file_fingerprint(moving)))
    return jobs
