"""The Dask worker's task: register one pair and describe what became of it.

:func:`register_pair` runs in the worker processes and never raises; the pipeline it runs for a
pair (read, register, write the resampled image) is :func:`register_and_resample`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from ..core.errors import ComirError
from .jobs import BatchSettings, PairJob, PairRecord, RegistrationSummary

if TYPE_CHECKING:
    from ..core.registration import RegistrationResult
    from ..core.zoo import ComirModel


def describe_error(exc: BaseException) -> str:
    """One-line error message: ours are written for users; others get their type name."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ComirError) else f"{type(exc).__name__}: {text}".rstrip(": ")


_worker_models: dict[tuple[str, int], ComirModel] = {}
_worker_models_lock = threading.Lock()


def _worker_model(reference: str) -> ComirModel:
    """The model, loaded once per worker process and shared by its task threads."""
    from ..api import load_model
    from ..core.zoo import resolve_model_path

    card = resolve_model_path(reference)
    key = (str(card), card.stat().st_mtime_ns)  # a replaced model file is reloaded
    with _worker_models_lock:
        if key not in _worker_models:
            _worker_models[key] = load_model(reference)
        return _worker_models[key]


def register_pair(job: PairJob, settings: BatchSettings, reference: str) -> PairRecord:
    """Worker task: register one pair; every failure becomes an ``error`` record, never raises.

    Parameters
    ----------
    job : PairJob
    settings : BatchSettings
    reference : str
        Model name or file the worker loads the model from (once per process).

    Returns
    -------
    PairRecord
        With the time taken and the worker's ``host:pid``.
    """
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"  # which node did what
    try:
        result = register_and_resample(job, settings, _worker_model(reference))
    except Exception as exc:  # a bad pair must not stop the batch: record why it failed
        return PairRecord(job, settings, "error", describe_error(exc),
                          time.perf_counter() - start, worker)
    return PairRecord(job, settings, "ok", "", time.perf_counter() - start, worker,
                      RegistrationSummary.from_result(result))


def register_and_resample(job: PairJob, settings: BatchSettings,
                          model: ComirModel) -> RegistrationResult:
    """The worker's pipeline for one pair: the ``register`` command's
    (:func:`napari_comir.pipeline.file_registration_events`): slides read lazily, pixel
    sizes from the files, the resampled moving image written tile by tile if the job asks, a
    kept field written to ``job.field`` (NPZ, moving -> fixed pixels).

    Raises
    ------
    Exception
        Whatever reading, registering or writing raised (:func:`register_pair` records it).
    """
    from ..core.field_transform import DisplacementFieldTransform
    from ..core.io.transform_formats import write_transform
    from ..pipeline import file_registration_events

    *_, last = file_registration_events(job.fixed, job.moving, model, settings.options(),
                                        resampled=job.resampled or None,
                                        compression=job.compression)
    result = last.result.result
    if job.field and isinstance(result.transform, DisplacementFieldTransform):
        write_transform(result.transform, job.field, format="npz")
    return result
