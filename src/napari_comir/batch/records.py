"""The records of a batch output folder: one JSON per pair, results.csv and the folder lock.

Only the client writes the records: each finished pair's record atomically as
``pairs/<stem>.json`` (never modified by a worker), and ``results.csv`` rebuilt atomically from
those records; workers write the images (``resampled/``) and kept fields (``fields/``). A
record is reused on a rerun only if its pair was registered ``ok`` from the same image content
with the same model and settings (:data:`RESUME_KEYS`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

from ..core.defaults import DEFORMABLE
from ..core.errors import InputError
from ..core.io import check_outputs_apart, write_text_atomic
from ..core.io.files import process_tag, tag_alive
from .jobs import RESULT_COLUMNS, BatchSettings, PairJob, PairRecord

RESULTS_NAME = "results.csv"
RECORDS_DIR = "pairs"
RESAMPLED_DIR = "resampled"
FIELDS_DIR = "fields"
LOCK_NAME = ".batch.lock"
# A record is reused on a rerun only if these match the current job and settings.
RESUME_KEYS = ("fixed", "moving", "fixed_fingerprint", "moving_fingerprint", "model_sha256",
               "method", "transform_model", "rotation_range", "scale_range", "compression")


class RecordStore:
    """The records of one output folder, loaded and kept up to date in memory.

    Parameters
    ----------
    out_dir : Path
        The batch's output folder.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.records_dir = out_dir / RECORDS_DIR
        self.results_csv = out_dir / RESULTS_NAME
        self.records: dict[str, PairRecord] = {}

    def check_apart(self, inputs: dict, resampled: bool, deformable: bool = False) -> None:
        """Refuse, before anything is written, an output folder whose records, results.csv,
        resampled images, fields or lock would be, hold or lie inside one of the ``inputs``
        (name -> path: the pairs CSV, its images, the model's files).

        Raises
        ------
        InputError
            Naming the output and the input it would replace.
        """
        outputs = {f"--out {RESULTS_NAME}": self.results_csv, f"--out {RECORDS_DIR}/": self.records_dir,
                   f"--out {LOCK_NAME}": self.out_dir / LOCK_NAME,
                   f"--out {RESAMPLED_DIR}/": self.out_dir / RESAMPLED_DIR if resampled else None,
                   f"--out {FIELDS_DIR}/": self.out_dir / FIELDS_DIR if deformable else None}
        check_outputs_apart(outputs, inputs)

    def create(self, resampled: bool, deformable: bool = False) -> None:
        """Create the folders (``resampled/`` and ``fields/`` too when asked for) and check
        they are writable.

        Raises
        ------
        InputError
            The folder cannot be created or written.
        """
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True)
            for wanted, name in ((resampled, RESAMPLED_DIR), (deformable, FIELDS_DIR)):
                if wanted:
                    (self.out_dir / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder {self.out_dir}: "
                             f"{exc.strerror}") from exc
        if not os.access(self.records_dir, os.W_OK):
            raise InputError(f"output folder is not writable: {self.out_dir}")

    def resampled_path(self, job: PairJob) -> str:
        """Absolute path of the job's resampled moving image."""
        return str((self.out_dir / RESAMPLED_DIR / f"{job.stem}.tif").resolve())

    def field_path(self, job: PairJob) -> str:
        """Absolute path of the job's deformable transform (written when its field is kept)."""
        return str((self.out_dir / FIELDS_DIR / f"{job.stem}.npz").resolve())

    def load(self) -> None:
        """Read the records of earlier runs; unreadable ones are ignored (their pairs rerun)."""
        self.records = {}
        for path in self.records_dir.glob("*.json"):
            try:
                self.records[path.stem] = PairRecord.from_dict(json.loads(path.read_text()))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                continue

    def is_done(self, job: PairJob, settings: BatchSettings) -> bool:
        """Whether an earlier run registered this pair from the same inputs and settings (and
        wrote the resampled image, if one is asked for now, and the field it kept)."""
        record = self.records.get(job.stem)
        if record is None or record.status != "ok":
            return False
        before, now = record.to_dict(), {**job.to_dict(), **settings.to_dict()}
        kept_field = record.summary.transform == DEFORMABLE
        return (all(before[key] == now[key] for key in RESUME_KEYS)
                and (not job.resampled or Path(job.resampled).is_file())
                and (not kept_field or Path(job.field).is_file()))

    def save(self, record: PairRecord) -> None:
        """Keep a finished pair's record and write it atomically as ``pairs/<stem>.json``."""
        self.records[record.job.stem] = record
        write_text_atomic(self.records_dir / f"{record.job.stem}.json",
                          json.dumps(record.to_dict()) + "\n")

    def write_results_csv(self, jobs: list[PairJob]) -> None:
        """Rebuild results.csv atomically from every record in the folder: this batch's pairs
        first, in CSV order, then those of earlier batches into the same folder."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        ours = [job.stem for job in jobs]
        for stem in ours + sorted(set(self.records) - set(ours)):
            if stem in self.records:
                writer.writerow(self.records[stem].to_row())
        write_text_atomic(self.results_csv, buffer.getvalue())

    @contextmanager
    def lock(self):
        """One batch at a time per output folder. The lock records the holder's host, process
        id and start time (:func:`~napari_comir.core.io.files.process_tag`): a live holder on
        this host, or any holder on another host (shared storage: this host cannot see whether
        it still runs), is refused; a lock whose process is gone (or whose id a later process
        reused) is taken over.

        Raises
        ------
        InputError
            Another batch holds the lock, or it cannot be taken.
        """
        path = self.out_dir / LOCK_NAME
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale(path)
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as exc:
                raise InputError(f"cannot lock {self.out_dir} for this batch: "
                                 f"{exc.strerror or exc}") from exc
            with os.fdopen(fd, "w") as handle:
                handle.write(process_tag() + "\n")
            break
        else:
            raise InputError(f"cannot lock {self.out_dir} for this batch")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def _check_stale(self, path: Path) -> None:
        """Return if the lock at ``path`` was left by a process that is gone; otherwise refuse."""
        remove = f"if no batch writes there any more, delete {path} and run again"
        if path.is_symlink() or not path.is_file():
            raise InputError(f"{path} is not a lock file (a folder, a link or a device): {remove}")
        try:
            holder = path.read_text(errors="replace").strip()
        except OSError as exc:
            raise InputError(f"cannot read the batch lock {path} ({exc.strerror or exc}); "
                             f"{remove}") from exc
        alive = tag_alive(holder)
        if alive is False:
            return
        if alive:
            raise InputError(f"another batch ({holder}) is writing into {self.out_dir}; wait for "
                             "it or use another --out")
        raise InputError(f"another batch may be writing into {self.out_dir}: its lock names "
                         f"{holder[:80]!r}, which this host cannot check; {remove}")
