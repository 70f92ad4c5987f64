"""Register many image pairs in parallel with Dask distributed; resumable, crash-tolerant.

Each pair is one task (:func:`~.worker.register_pair`): read both images, compute their
CoMIRs, register, optionally write the resampled moving image. The client records every finished pair
(:class:`~.records.RecordStore`), so a rerun skips pairs already done ``ok`` with the same
images, model and settings, and an interrupted batch simply continues.

A worker that dies mid-task (out of memory, killed node) is replaced and its tasks rescheduled
by Dask; only a pair that kills workers repeatedly is recorded as an error.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.defaults import DEFAULT_TILE_COMPRESSION, DEFORMABLE
from ..core.errors import InputError
from ..core.io.slides import check_compression_name
from ..core.progress import Progress
from .jobs import BatchSettings, PairJob, PairRecord, read_jobs
from .records import RecordStore
from .worker import describe_error, register_pair

if TYPE_CHECKING:  # torch is imported only when a batch runs: keeps `napari-comir --help` fast
    from ..core.zoo import ComirModel
    from ..pipeline import RegistrationOptions

# How often the results CSV is rebuilt while results arrive (the per-pair JSONs are the
# durable record, so rebuilding less often loses nothing; it keeps huge batches O(n)).
CSV_REFRESH_S = 1.0


def run_batch(pairs_csv: str | os.PathLike, model: ComirModel | str | os.PathLike,
              out_dir: str | os.PathLike, *, scheduler: str | None = None,
              n_workers: int | None = None, threads_per_worker: int | None = None,
              resampled: bool = False, compression: str = DEFAULT_TILE_COMPRESSION,
              fixed_column: str = "shg_file", moving_column: str = "bf_file",
              options: RegistrationOptions | None = None,
              **option_values) -> Iterator[Progress]:
    """Register every pair of a CSV in parallel; yield one :class:`Progress` per finished pair.

    Inputs, the model and the output folder are checked before this returns; the cluster starts
    when iteration begins. Closing the generator early cancels the remaining pairs (finished
    ones are kept, and a rerun continues).

    Parameters
    ----------
    pairs_csv : path
        CSV with columns ``fixed_column`` and ``moving_column`` (image paths, relative to the
        CSV) and optionally ``name`` (default: the fixed file's stem).
    model : ComirModel, str or path
        Model name, model file (.json/.safetensors) or a model object (saved to
        ``out_dir/model.json`` for the workers). Each worker loads it once.
    out_dir : path
        Created if needed. Receives ``results.csv``, ``pairs/<name>.json`` and, with
        ``resampled``, ``resampled/<name>.tif`` (the moving image on the fixed grid).
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.5:8786"`` (workers must see
        the images and ``out_dir`` at the same paths). Default: a local cluster.
    n_workers, threads_per_worker : int, optional
        Local cluster size; default one single-threaded worker process per CPU core.
    resampled : bool
        Also write the resampled moving images.
    compression : str
        Of the resampled TIFFs' tiles: one of
        :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS` ("auto": JPEG for 8-bit RGB,
        lossless zlib otherwise). One a pair's pixels cannot take (JPEG for 16-bit) is that
        pair's error.
    fixed_column, moving_column : str
        CSV columns of the fixed and moving images (default SHG fixed, BF moving).
    options : RegistrationOptions, optional
        ``method``, ``transform``, ``rotation_range`` and ``scale_range`` (pixel sizes come from
        each pair's files); ``option_values`` replace some of them.

    Returns
    -------
    Iterator of Progress
        ``stage="batch"``; ``step`` counts finished pairs including those skipped as already
        done; ``metrics`` has ``ok``, ``errors`` and ``pairs_per_s``. The last event's
        ``result`` is a summary dict (total, ok, errors, skipped, seconds, pairs_per_s,
        results_csv).

    Raises
    ------
    InputError
        Missing/invalid CSV, duplicate pair names, unwritable output folder.
    ModelFileError
        Unknown or invalid model.
    """
    from ..api import load_model
    from ..core.zoo import ComirModel, model_files
    from ..pipeline import RegistrationOptions

    # Check everything before writing anything, so a bad call leaves no output folder behind.
    cluster = Cluster(scheduler, n_workers, threads_per_worker)
    check_compression_name(compression)
    options = RegistrationOptions.build(options, **option_values)
    jobs = read_jobs(Path(pairs_csv), fixed_column, moving_column)
    loaded = model if isinstance(model, ComirModel) else load_model(model, "cpu")
    cluster.check_reachable()  # an unreachable scheduler is refused before anything is written
    store = RecordStore(Path(out_dir))
    deformable = options.transform == DEFORMABLE
    store.check_apart({"pairs CSV": pairs_csv, **model_files(model),
                       **{f"pair {job.name!r} {side}": getattr(job, side)
                          for job in jobs for side in ("fixed", "moving")}}, resampled, deformable)
    store.create(resampled, deformable)
    reference = _model_reference(model, store.out_dir)
    if resampled:
        jobs = [replace(job, resampled=store.resampled_path(job), compression=compression)
                for job in jobs]
    if deformable:
        jobs = [replace(job, field=store.field_path(job)) for job in jobs]
    settings = BatchSettings.from_options(loaded.card, options)
    return _run(jobs, settings, reference, store, cluster)


#: What a --scheduler address must look like (protocol://host:port; Dask's in-process inproc://...).
_SCHEDULER_ADDRESS = re.compile(r"^((tcp|tls|ws|wss|ucx)://\[?[\w.:-]+\]?:\d{1,5}|inproc://\S+)$")
#: Seconds to wait for a --scheduler before giving up with a one-line error (Dask's default is 30).
SCHEDULER_TIMEOUT_S = 10


@dataclass(frozen=True)
class Cluster:
    """Where the tasks run: an existing scheduler, or a local cluster of this size.

    Raises
    ------
    InputError
        A worker count or thread count that is not a whole number from 1 to 1024.
    """

    scheduler: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None

    def __post_init__(self):
        for name in ("n_workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 1 <= value <= 1024):
                raise InputError(f"{name} must be a whole number from 1 to 1024, got {value!r}")
        if self.scheduler is not None and not _SCHEDULER_ADDRESS.match(self.scheduler):
            raise InputError(f"--scheduler {self.scheduler!r} is not a Dask scheduler address like "
                             "tcp://10.0.0.5:8786")

    def check_reachable(self) -> None:
        """Connect once to the given scheduler, or raise InputError (a local cluster starts later)."""
        if self.scheduler is not None:
            with self.client():
                pass

    @contextmanager
    def client(self):
        """A Dask client of the scheduler, or of a LocalCluster started (and stopped) here.

        Raises
        ------
        InputError
            Dask distributed is not installed.
        """
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise InputError("batch registration needs Dask: "
                             "pip install 'napari-comir[batch]'") from exc

        if self.scheduler is not None:
            try:
                client = Client(self.scheduler, timeout=SCHEDULER_TIMEOUT_S)
            except (OSError, ValueError, TimeoutError) as exc:  # unreachable, refused, malformed
                raise InputError(f"cannot reach the Dask scheduler {self.scheduler}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
            with client:
                yield client
            return
        import dask

        threads = self.threads_per_worker or 1
        workers = self.n_workers or max(1, (os.cpu_count() or 1) // threads)
        # Dask's nanny starts workers with OMP_NUM_THREADS=1 (one torch thread per task, as
        # wanted) and MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold:
        # every large tensor is then mmapped and page-faulted afresh, making registration ~2x
        # slower. Drop it.
        environ = {key: value for key, value in
                   dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                   if key != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
                LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                             host="127.0.0.1", dashboard_address=None,
                             silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client


def _run(jobs: list[PairJob], settings: BatchSettings, reference: str, store: RecordStore,
         cluster: Cluster) -> Iterator[Progress]:
    """Under the folder lock: skip the pairs already done, run the rest, record each result
    and yield its progress event; results.csv is rebuilt also when stopped early."""
    with store.lock():
        store.load()
        todo = [job for job in jobs if not store.is_done(job, settings)]
        skipped, counts = len(jobs) - len(todo), {"ok": 0, "error": 0}
        start = last_csv = time.perf_counter()

        def event(message: str, result: dict | None = None) -> Progress:
            seconds = time.perf_counter() - start
            done = counts["ok"] + counts["error"]
            return Progress("batch", skipped + done, len(jobs), message,
                            {"ok": counts["ok"], "errors": counts["error"],
                             "pairs_per_s": done / seconds if seconds > 0 else 0.0}, result)

        try:
            for record in _finished_records(todo, settings, reference, cluster):
                store.save(record)
                counts[record.status] += 1
                if time.perf_counter() - last_csv >= CSV_REFRESH_S:
                    store.write_results_csv(jobs)
                    last_csv = time.perf_counter()
                yield event(record.message)
        finally:
            store.write_results_csv(jobs)  # also when stopped early
        seconds = time.perf_counter() - start
        summary = {"total": len(jobs), "ok": counts["ok"] + skipped, "errors": counts["error"],
                   "skipped": skipped, "seconds": seconds,
                   "pairs_per_s": len(todo) / seconds if todo and seconds > 0 else 0.0,
                   "results_csv": str(store.results_csv)}
        yield event(f"{summary['ok']}/{len(jobs)} ok, {counts['error']} failed", result=summary)


def _finished_records(jobs: list[PairJob], settings: BatchSettings, reference: str,
                      cluster: Cluster) -> Iterator[PairRecord]:
    """Submit one task per job and yield their records as they finish (any order); a task
    whose workers kept dying becomes an ``error`` record."""
    if not jobs:  # everything already done: don't start a cluster
        return
    with cluster.client() as client:
        from distributed import as_completed

        futures = {client.submit(register_pair, job, settings, reference, pure=False): job
                   for job in jobs}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # the task never finished, e.g. KilledWorker
                    yield PairRecord(futures[future], settings, "error",
                                     f"worker failed: {describe_error(exc)}")
        finally:
            client.cancel(list(futures))  # stopped early: don't leave work on a shared cluster


def _model_reference(model: ComirModel | str | os.PathLike, out_dir: Path) -> str:
    """What workers load the model from.

    Names of bundled/user models stay names (a remote worker resolves them in its own install);
    files become absolute paths; a model object is saved to ``out_dir/model.json``.
    """
    from ..core.zoo import ComirModel, list_models, resolve_model_path, save_model

    if isinstance(model, ComirModel):
        return str(save_model(model, out_dir / "model"))
    if str(model) in list_models():
        return str(model)
    return str(resolve_model_path(model).resolve())
