"""Files written atomically, outputs checked before any work, and file fingerprints."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import ComirError, InputError, OutputError

#: Bytes hashed from each end of a file by :func:`file_fingerprint` (slides are many GB).
FINGERPRINT_BYTES = 1 << 20


def file_fingerprint(path: str | os.PathLike) -> str:
    """Size, modification time and a SHA-256 of the first and last MiB: tells a replaced or
    edited file from the one a record was made from, without reading a whole slide. "missing"
    when the file cannot be read."""
    import hashlib

    path = Path(path)
    try:
        stat = path.stat()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if stat.st_size > 2 * FINGERPRINT_BYTES:
                handle.seek(-FINGERPRINT_BYTES, os.SEEK_END)
                digest.update(handle.read(FINGERPRINT_BYTES))
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()[:16]}"


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), "0" where unknown: tells a
    live process from a later one that reused its id."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22, "starttime"; fields[0] is field 3
    except (OSError, IndexError):
        return "0"


def process_tag(pid: int | None = None) -> str:
    """This process (or ``pid`` of this host) as ``PID-START@HOST``: what locks and temporary
    names record, so another process can tell whether their writer still runs."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_process_start(pid)}@{socket.gethostname()}"


_TAG = re.compile(r"^(\d+)-(\d+)@(.+)$")


def tag_alive(tag: str) -> bool | None:
    """Whether the process a :func:`process_tag` names still runs: ``None`` when it ran on
    another host (this host cannot tell) or the tag cannot be read."""
    match = _TAG.match(tag.strip())
    if match is None or match[3] != socket.gethostname():
        return None
    pid, start = int(match[1]), match[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    except (OverflowError, OSError):
        return False
    # the same id started at another time: the id was reused, the tagged process is gone
    return start == "0" or _process_start(pid) in (start, "0")


def temporary_prefix(path: Path) -> str:
    """Prefix of the hidden temporary files and folders written beside ``path`` while it is
    written: ``.NAME.TAG.`` (see :func:`remove_stale_temporaries`)."""
    return f".{path.name}.{process_tag()}."


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove what writes of ``path`` killed on this host left beside it (temporary files and
    folders named by :func:`temporary_prefix` whose process is gone); a live writer's, and
    another host's, are kept. Returns what was removed."""
    ours = re.compile(rf"^\.{re.escape(path.name)}\.(\d+-\d+@{re.escape(socket.gethostname())})\.")
    removed = []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = ours.match(entry.name)
            if match is None or tag_alive(match[1]) is not False:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def as_path(value, what: str) -> Path:
    """``value`` as a Path when it is a path (text or os.PathLike), else an InputError naming
    ``what``: an API argument checked at the boundary, not a TypeError deep inside."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise InputError(f"{what} must be a file path, got {value!r}"[:200])
    return Path(value)


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that cannot be written, before any work is done for it.

    An existing path that is not a regular file (a device such as ``/dev/null``, a pipe, a
    socket) is refused too: the atomic write would replace it by a file (as root, the device
    node itself).
    """
    path = as_path(path, "an output")
    if path.is_dir():
        raise InputError(f"output path is a folder, expected a file name: {path}")
    if path.exists() and not path.is_file():
        raise InputError(f"output {path} exists and is not a regular file (a device, a pipe or "
                         "a socket): it will not be replaced; name a file")
    if not path.parent.exists():
        raise InputError(f"output folder does not exist: {path.parent}")
    if not path.parent.is_dir():
        raise InputError(f"output folder is not a folder: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output folder is not writable: {path.parent}")
    return path


def _overlap(output: Path, source: Path) -> str | None:
    """How writing ``output`` would touch ``source`` ("is", "contains", "lies inside"), or None.

    Paths are compared by what they resolve to (links followed) and, for existing files, by
    ``samefile`` (hard links): an output folder (an ``.ome.zarr``) that holds an input would be
    replaced with it, and an output inside an input folder would change that input.
    """
    try:
        output_resolved, source_resolved = output.resolve(), source.resolve()
    except (OSError, RuntimeError):  # a link loop: compare the names as given
        output_resolved, source_resolved = output.absolute(), source.absolute()
    if output_resolved == source_resolved:
        return "is"
    with contextlib.suppress(OSError, ValueError):
        if output.exists() and source.exists() and output.samefile(source):
            return "is"
    if output_resolved in source_resolved.parents:
        return "contains"
    if source_resolved in output_resolved.parents and source.is_dir():
        return "lies inside"
    return None


def check_outputs_apart(outputs: dict, inputs: dict) -> None:
    """Refuse, before any work, an output that is, contains or lies inside one of the inputs, or
    that is another output.

    ``outputs`` and ``inputs`` map an option name (e.g. ``"--out"``) to a path or ``None``.
    Inputs are everything a command reads: images, the model's card and weights
    (:func:`napari_comir.core.zoo.model_files`), checkpoints, CSVs and the files they list,
    transforms, annotations. Paths are compared by what they resolve to and, for files that
    exist, by ``samefile`` (links included), so nothing a command writes can replace or change
    what it reads or another of its outputs.
    """
    outputs = {name: Path(path) for name, path in outputs.items() if path is not None}
    inputs = {name: Path(path) for name, path in inputs.items() if path is not None}
    names = list(outputs)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            if _overlap(outputs[name], outputs[other]) == "is":
                raise InputError(f"{name} and {other} are the same file ({outputs[name]}); "
                                 "give each output its own name")
        for source, path in inputs.items():
            how = _overlap(outputs[name], path)
            if how == "is":
                raise InputError(f"{name} {outputs[name]} is the input {source}: it would be "
                                 "overwritten; write the output elsewhere")
            if how is not None:
                raise InputError(f"{name} {outputs[name]} {how} the input {source} ({path}): "
                                 "it would be changed or replaced; write the output elsewhere")


#: Free bytes under which a failed write is put down to a full disk (libraries such as
#: safetensors and torch report it in their own words).
FULL_DISK_BYTES = 1 << 20


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn any failure of the writes inside into one :class:`OutputError` naming ``path``: "the
    disk is full" when it is (ENOSPC, a quota, or next to no space left whatever the library
    raised), else the system's reason."""
    try:
        yield
    except ComirError:
        raise
    except Exception as exc:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                or (free is not None and free < FULL_DISK_BYTES))
        if full:
            left = "" if free is None else f", {free / 2**20:.1f} MiB free"
            raise OutputError(f"cannot write {path}: the disk is full{left}; nothing was written — "
                              "free some space or write elsewhere") from exc
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


#: Tries at an unused random name for a temporary beside an output.
_NAME_TRIES = 100


def _created_beside(path: Path, suffix: str, create) -> Path:
    """A new hidden temporary beside ``path`` (named by :func:`temporary_prefix`) that ``create``
    (a name -> None, raising FileExistsError when the name is taken) makes with a new file's or
    folder's usual permissions: the system applies the umask as it creates it. ``mkstemp`` and
    ``mkdtemp`` make 0600 and 0700, and reading the umask to mend that means setting it, which
    other threads creating files at that moment would get."""
    for _ in range(_NAME_TRIES):
        candidate = path.parent / f"{temporary_prefix(path)}{secrets.token_hex(6)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"no unused temporary name beside {path}")


def staging_directory(path: Path) -> Path:
    """An empty folder beside ``path`` to build a folder output in (moved into place when whole),
    with a new folder's usual permissions (the other users of a shared disk can read it)."""
    return _created_beside(path, ".new", lambda name: os.mkdir(name, 0o777))


def _new_file(name: Path) -> None:
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place.

    Readers never see a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    check_output_path(path)
    try:
        remove_stale_temporaries(path)
        tmp_path = _created_beside(path, ".tmp", _new_file)
    except OSError as exc:
        raise InputError(f"cannot write into {path.parent}: {exc.strerror or exc}") from exc
    try:
        with write_errors(path):
            yield tmp_path
            with open(tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # directory fsync is not supported everywhere
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_utf8_text(path: str | os.PathLike, expected: str) -> str:
    """A text file's content (UTF-8, a byte-order mark skipped); an ``InputError`` naming
    ``expected`` (e.g. "GeoJSON") when it is not UTF-8 text or cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not a text file in UTF-8 (byte {exc.start}); "
                         f"expected {expected}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
