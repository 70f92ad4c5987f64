"""Files written atomically, outputs checked before any work, and file fingerprints."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

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


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that cannot be written, before any work is done for it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path is a folder, expected a file name: {path}")
    if not path.parent.exists():
        raise InputError(f"output folder does not exist: {path.parent}")
    if not path.parent.is_dir():
        raise InputError(f"output folder is not a folder: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output folder is not writable: {path.parent}")
    return path


def check_outputs_apart(outputs: dict, inputs: dict) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output.

    ``outputs`` and ``inputs`` map an option name (e.g. ``"--out"``) to a path or ``None``. Paths
    are compared by what they resolve to and, for files that exist, by ``samefile`` (links
    included), so nothing a command writes can replace what it reads or another of its outputs.
    """
    def same(a: Path, b: Path) -> bool:
        if a.resolve() == b.resolve():
            return True
        try:
            return a.exists() and b.exists() and a.samefile(b)
        except OSError:
            return False

    outputs = {name: Path(path) for name, path in outputs.items() if path is not None}
    inputs = {name: Path(path) for name, path in inputs.items() if path is not None}
    names = list(outputs)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            if same(outputs[name], outputs[other]):
                raise InputError(f"{name} and {other} are the same file ({outputs[name]}); "
                                 "give each output its own name")
        for source, path in inputs.items():
            if same(outputs[name], path):
                raise InputError(f"{name} {outputs[name]} is the input {source}: it would be "
                                 "overwritten; write the output elsewhere")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place.

    Readers never see a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write into {path.parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should get normal permissions
    tmp_path = Path(tmp)
    try:
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
