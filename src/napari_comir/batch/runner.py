"""Register many image pairs in parallel with Dask distributed; resumable, crash-tolerant.

Each pair is one task: read both images, compute their CoMIRs, register, optionally write the
resampled moving image. The client keeps the record of every finished pair as one small JSON
file in ``out_dir/pairs/`` (written atomically, never modified by a worker) and rebuilds
``out_dir/results.csv`` atomically from those records. A rerun skips pairs already done ``ok``
with the same images, model and settings, so an interrupted batch simply continues.

A worker that dies mid-task (out of memory, killed node) is replaced and its tasks rescheduled
by Dask; only a pair that kills workers repeatedly is recorded as an error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .core.defaults import DEFAULT_MODEL_NAME, DEFAULT_TRANSFORM, TRANSFORM_MODELS
from .core.errors import ComirError, InputError
from .core.io import file_fingerprint, write_text_atomic
from .core.progress import Progress

if TYPE_CHECKING:  # torch is imported only when a batch runs: keeps `napari-comir --help` fast
    from .core.zoo import ComirModel

RESULTS_NAME = "results.csv"
RECORDS_DIR = "pairs"
RESAMPLED_DIR = "resampled"
RESULT_COLUMNS = ("pair", "status", "transform", "angle_deg", "scale_x", "scale_y", "shear", "tx",
                  "ty", "score", "detail_score", "success_likely", "reasons", "seconds", "matrix_xy",
                  "error", "fixed", "moving", "resampled", "model", "model_sha256", "method",
                  "rotation_range", "scale_range", "worker")
# A record is reused on a rerun only if these match the current job.
_RESUME_KEYS = ("fixed", "moving", "fixed_fingerprint", "moving_fingerprint", "model_sha256",
                "method", "transform_model", "rotation_range", "scale_range")
LOCK_NAME = ".batch.lock"
# How often the results CSV is rebuilt while results arrive (the per-pair JSONs are the
# durable record, so rebuilding less often loses nothing; it keeps huge batches O(n)).
CSV_REFRESH_S = 1.0

EPILOG = """The CSV lists one pair per row: columns name, shg_file and bf_file (change them with
--fixed-column / --moving-column); relative paths are relative to the CSV. Results go to
OUT/results.csv (one row per pair: transform, score, status ok|error, error message) and
OUT/pairs/<name>.json. Rerunning the same command skips pairs already done.

examples:
  napari-comir batch pairs.csv --model bf-shg --out results/ --resampled
  napari-comir batch pairs.csv --model my-model.json --out results/ --workers 4
  napari-comir batch pairs.csv --out results/ --scheduler tcp://10.0.0.5:8786
"""


def _safe_name(name: str) -> str:
    """A file-name-safe version of a pair name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "pair"


def _read_jobs(pairs_csv: Path, fixed_column: str, moving_column: str) -> list[dict]:
    """One job dict per CSV row: pair name, absolute image paths and file stem; names unique."""
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
    jobs, stems = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        if not row[fixed_column] or not row[moving_column]:
            raise InputError(f"{pairs_csv.name} line {number}: "
                             f"empty {fixed_column} or {moving_column}")
        name = row.get("name") or Path(row[fixed_column]).stem
        stem = _safe_name(name)
        if stem in stems:
            raise InputError(f"{pairs_csv.name} line {number}: pair name {name!r} repeats "
                             f"{stems[stem]!r}; names must be unique")
        stems[stem] = name
        fixed = (pairs_csv.parent / row[fixed_column]).resolve()
        moving = (pairs_csv.parent / row[moving_column]).resolve()
        # The images' content, not only their paths, decides whether a record can be reused.
        jobs.append({"pair": name, "stem": stem, "fixed": str(fixed), "moving": str(moving),
                     "fixed_fingerprint": file_fingerprint(fixed),
                     "moving_fingerprint": file_fingerprint(moving)})
    return jobs


def _model_reference(model: ComirModel | str | os.PathLike, out_dir: Path) -> str:
    """What workers load the model from.

    Names of bundled/user models stay names (a remote worker resolves them in its own install);
    files become absolute paths; a model object is saved to ``out_dir/model.json``.
    """
    from .core.zoo import ComirModel, list_models, resolve_model_path, save_model

    if isinstance(model, ComirModel):
        return str(save_model(model, out_dir / "model"))
    if str(model) in list_models():
        return str(model)
    return str(resolve_model_path(model).resolve())


_worker_models: dict[tuple[str, int], ComirModel] = {}
_worker_lock = threading.Lock()


def _worker_model(reference: str) -> ComirModel:
    """The model, loaded once per worker process and shared by its task threads."""
    from .api import load_model
    from .core.zoo import resolve_model_path

    card = resolve_model_path(reference)
    key = (str(card), card.stat().st_mtime_ns)  # a replaced model file is reloaded
    with _worker_lock:
        if key not in _worker_models:
            _worker_models[key] = load_model(reference)
        return _worker_models[key]


def _describe(exc: BaseException) -> str:
    """One-line error message: ours are written for users; others get their type name."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ComirError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _register_pair(job: dict, model_reference: str, options: dict) -> dict:
    """Worker task: register one pair; every failure becomes an ``error`` record, never raises."""
    from .api import register_multimodal
    from .core.io import read_image, write_tiff
    from .core.transforms import resample

    start = time.perf_counter()
    job = {**job, "worker": f"{socket.gethostname()}:{os.getpid()}"}  # which node did what
    try:
        model = _worker_model(model_reference)
        fixed, moving = read_image(job["fixed"]), read_image(job["moving"])
        result = register_multimodal(fixed, moving, model, method=options["method"],
                                     transform=options["transform"],
                                     rotation_range=options["rotation_range"],
                                     scale_range=options["scale_range"])
        if job["resampled"]:
            write_tiff(job["resampled"], resample(moving, result.transform, fixed.shape[:2]))
    except Exception as exc:  # a bad pair must not stop the batch: record why it failed
        return {**job, "status": "error", "error": _describe(exc),
                "seconds": time.perf_counter() - start}
    transform = result.transform
    parts = transform.decompose(result.moving_centre_xy)
    return {**job, "status": "ok", "error": "", "transform": transform.model,
            "angle_deg": parts.angle_deg, "scale_x": parts.scale_xy[0], "scale_y": parts.scale_xy[1],
            "shear": parts.shear, "tx": transform.translation_xy[0], "ty": transform.translation_xy[1],
            "score": result.score, "detail_score": result.detail_score,
            "success_likely": result.success_likely, "reasons": "; ".join(result.reasons),
            "seconds": time.perf_counter() - start, "matrix_xy": transform.matrix_xy.tolist()}


def _load_records(records_dir: Path) -> dict[str, dict]:
    """Records of earlier runs keyed by file stem; unreadable ones are ignored (rerun)."""
    records = {}
    for path in records_dir.glob("*.json"):
        try:
            records[path.stem] = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
    return records


def _is_done(record: dict | None, job: dict) -> bool:
    """Whether an earlier run registered this job's pair with the same inputs and settings."""
    return (bool(record) and record.get("status") == "ok"
            and all(record.get(key) == job[key] for key in _RESUME_KEYS)
            and (not job["resampled"] or Path(job["resampled"]).is_file()))


def _write_results_csv(path: Path, jobs: list[dict], records: dict[str, dict]) -> None:
    """Rebuild the results CSV atomically: every record in the folder, this batch's pairs first
    in CSV order, then those of earlier batches into the same folder."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    ours = [job["stem"] for job in jobs]
    for stem in ours + sorted(set(records) - set(ours)):
        record = records.get(stem)
        if record is not None:
            row = dict(record)
            if "matrix_xy" in row:
                row["matrix_xy"] = json.dumps(row["matrix_xy"])
            writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())


@contextmanager
def _client(scheduler: str | None, n_workers: int | None, threads_per_worker: int | None):
    """A client of an existing scheduler, or of a LocalCluster sized to this machine."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise InputError("batch registration needs Dask: "
                         "pip install 'napari-comir[batch]'") from exc

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    import dask

    threads = threads_per_worker or 1
    workers = n_workers or max(1, (os.cpu_count() or 1) // threads)
    # Dask's nanny starts workers with OMP_NUM_THREADS=1 (one torch thread per task, as wanted)
    # and MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold: every large
    # tensor is then mmapped and page-faulted afresh, making registration ~2x slower. Drop it.
    environ = {key: value for key, value in
               dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if key != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                         host="127.0.0.1", dashboard_address=None,
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run_batch(pairs_csv: str | os.PathLike, model: ComirModel | str | os.PathLike,
              out_dir: str | os.PathLike, *, scheduler: str | None = None,
              n_workers: int | None = None, threads_per_worker: int | None = None,
              resampled: bool = False, fixed_column: str = "shg_file",
              moving_column: str = "bf_file", method: str = "search",
              transform: str = DEFAULT_TRANSFORM, rotation_range: float = 180.0,
              scale_range: tuple[float, float] | None = None) -> Iterator[Progress]:
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
    fixed_column, moving_column : str
        CSV columns of the fixed and moving images (default SHG fixed, BF moving).
    method, transform, rotation_range, scale_range
        As in :func:`napari_comir.api.register_multimodal`.

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
    from .api import load_model
    from .core.registration import METHODS, angle_bounds, check_model, scale_bounds
    from .core.zoo import ComirModel

    # Check everything before writing anything, so a bad call leaves no output folder behind.
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and not (isinstance(value, int) and 1 <= value <= 1024):
            raise InputError(f"{name} must be a whole number from 1 to 1024, got {value!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    angle_bounds(rotation_range)
    scale_bounds(scale_range, check_model(transform))
    scale_range = None if scale_range is None else [float(v) for v in scale_range]
    jobs = _read_jobs(Path(pairs_csv), fixed_column, moving_column)
    loaded = model if isinstance(model, ComirModel) else load_model(model, "cpu")
    out_dir = Path(out_dir)
    try:
        (out_dir / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
        if resampled:
            (out_dir / RESAMPLED_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out_dir}: {exc.strerror}") from exc
    if not os.access(out_dir / RECORDS_DIR, os.W_OK):
        raise InputError(f"output folder is not writable: {out_dir}")
    reference = _model_reference(model, out_dir)
    for job in jobs:
        job.update(model=loaded.card.name, model_sha256=loaded.card.sha256, method=method,
                   transform_model=transform, rotation_range=float(rotation_range),
                   scale_range=scale_range,
                   resampled=str((out_dir / RESAMPLED_DIR / f"{job['stem']}.tif").resolve())
                   if resampled else "")
    options = {"method": method, "transform": transform, "rotation_range": rotation_range,
               "scale_range": scale_range}
    return _run(jobs, reference, options, out_dir, scheduler, n_workers, threads_per_worker)


def _records(jobs: list[dict], reference: str, options: dict, scheduler: str | None,
             n_workers: int | None, threads_per_worker: int | None) -> Iterator[dict]:
    """Submit one task per job and yield their records as they finish (any order)."""
    if not jobs:  # everything already done: don't start a cluster
        return
    with _client(scheduler, n_workers, threads_per_worker) as client:
        from distributed import as_completed

        futures = {client.submit(_register_pair, job, reference, options, pure=False): job
                   for job in jobs}
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except Exception as exc:  # the task never finished, e.g. KilledWorker
                    yield {**job, "status": "error", "error": f"worker failed: {_describe(exc)}"}
        finally:
            client.cancel(list(futures))  # stopped early: don't leave work on a shared cluster


@contextmanager
def _folder_lock(out_dir: Path):
    """One batch at a time per output folder: a second one is refused while the first runs
    (its process alive on this host); a lock left by a dead process is taken over."""
    path = out_dir / LOCK_NAME
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = path.read_text(errors="replace").strip() if path.exists() else ""
            host, _, pid = holder.partition(":")
            if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
                raise InputError(f"another batch ({holder}) is writing into {out_dir}; wait for "
                                 "it or use another --out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(me + "\n")
        break
    else:
        raise InputError(f"cannot lock {out_dir} for this batch")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(jobs: list[dict], reference: str, options: dict, out_dir: Path, scheduler: str | None,
         n_workers: int | None, threads_per_worker: int | None) -> Iterator[Progress]:
    with _folder_lock(out_dir):
        yield from _run_locked(jobs, reference, options, out_dir, scheduler, n_workers,
                               threads_per_worker)


def _run_locked(jobs: list[dict], reference: str, options: dict, out_dir: Path,
                scheduler: str | None, n_workers: int | None,
                threads_per_worker: int | None) -> Iterator[Progress]:
    records_dir, csv_path = out_dir / RECORDS_DIR, out_dir / RESULTS_NAME
    records = _load_records(records_dir)
    todo = [job for job in jobs if not _is_done(records.get(job["stem"]), job)]
    skipped, counts = len(jobs) - len(todo), {"ok": 0, "error": 0}
    start = last_csv = time.perf_counter()

    def event(message: str, result=None) -> Progress:
        seconds = time.perf_counter() - start
        done = counts["ok"] + counts["error"]
        return Progress("batch", skipped + done, len(jobs), message,
                        {"ok": counts["ok"], "errors": counts["error"],
                         "pairs_per_s": done / seconds if seconds > 0 else 0.0}, result)

    try:
        for record in _records(todo, reference, options, scheduler, n_workers, threads_per_worker):
            records[record["stem"]] = record
            write_text_atomic(records_dir / f"{record['stem']}.json", json.dumps(record) + "\n")
            counts[record["status"]] += 1
            if time.perf_counter() - last_csv >= CSV_REFRESH_S:
                _write_results_csv(csv_path, jobs, records)
                last_csv = time.perf_counter()
            detail = f"score {record['score']:.3f}" if record["status"] == "ok" else record["error"]
            yield event(f"{record['pair']}: {record['status']} ({detail})")
    finally:
        _write_results_csv(csv_path, jobs, records)  # also when stopped early
    seconds = time.perf_counter() - start
    summary = {"total": len(jobs), "ok": counts["ok"] + skipped, "errors": counts["error"],
               "skipped": skipped, "seconds": seconds,
               "pairs_per_s": len(todo) / seconds if todo and seconds > 0 else 0.0,
               "results_csv": str(csv_path)}
    yield event(f"{summary['ok']}/{len(jobs)} ok, {counts['error']} failed", result=summary)


def _batch(args: argparse.Namespace) -> int:
    """CLI handler: exit status 0 if every pair registered, 1 if some failed."""
    from tqdm.auto import tqdm

    events = run_batch(args.pairs, args.model, args.out, scheduler=args.scheduler,
                       n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                       resampled=args.resampled, fixed_column=args.fixed_column,
                       moving_column=args.moving_column, method=args.method,
                       transform=args.transform, rotation_range=args.rotation_range,
                       scale_range=args.scale_range)
    try:
        with tqdm(desc="batch", unit="pair", dynamic_ncols=True, file=sys.stderr) as bar:
            for event in events:
                bar.total, bar.n = event.total, event.step
                bar.set_postfix(ok=event.metrics["ok"], errors=event.metrics["errors"],
                                refresh=False)
                bar.refresh()
    except BrokenPipeError:  # the reader went away (`| head`): stop the cluster now
        from .cli import silence_output

        silence_output()
        events.close()  # finished pairs stay recorded; a rerun continues
        raise
    summary = event.result
    print(f"{summary['ok']}/{summary['total']} pairs ok ({summary['skipped']} already done), "
          f"{summary['errors']} failed -> {summary['results_csv']}")
    return 1 if summary["errors"] else 0


def add_batch_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to the ``napari-comir`` parser."""
    parser = subparsers.add_parser(
        "batch", help="register many pairs listed in a CSV, in parallel (Dask); resumable",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", help="CSV of pairs (columns name, shg_file, bf_file)")
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME,
                        help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    parser.add_argument("--out", required=True,
                        help="output folder (results.csv, pairs/, resampled/)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. "
                        "tcp://host:8786 (default: a local cluster)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: one per CPU core)")
    parser.add_argument("--threads-per-worker", type=int, metavar="N", help="default 1")
    parser.add_argument("--resampled", action="store_true",
                        help="also write each moving image resampled onto its fixed grid")
    parser.add_argument("--method", default="search", choices=["search", "sift"],
                        help="global rotation x translation search (default) or SIFT + RANSAC")
    parser.add_argument("--transform", default=DEFAULT_TRANSFORM, choices=TRANSFORM_MODELS,
                        help="transform model, as for register (default affine)")
    parser.add_argument("--rotation-range", type=float, default=180.0, metavar="DEG",
                        help="search rotations within ±DEG degrees (default 180: any rotation)")
    parser.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="scales searched (default 0.8 1.25)")
    parser.add_argument("--fixed-column", default="shg_file", help="CSV column of the fixed images "
                        "(default shg_file)")
    parser.add_argument("--moving-column", default="bf_file", help="CSV column of the moving "
                        "images (default bf_file)")
    parser.set_defaults(func=_batch)
    return parser
