"""Batch registration of many image pairs on a Dask cluster; resumable, crash-tolerant.

``jobs`` holds what a batch registers and keeps (pair jobs, shared settings, per-pair records),
``records`` the output folder's record store (per-pair JSON, results.csv, the folder lock),
``runner`` the Dask runner (cluster, submitting, dead workers, progress events) and ``worker``
the task each pair runs as. The ``napari-comir batch`` command is wired in
:mod:`napari_comir.cli`. Dask is needed only when a batch runs, not to import this package.
"""

from .jobs import BatchSettings, PairJob, PairRecord, RegistrationSummary, read_jobs
from .records import RecordStore
from .runner import run_batch

__all__ = ["BatchSettings", "PairJob", "PairRecord", "RecordStore", "RegistrationSummary",
           "read_jobs", "run_batch"]
