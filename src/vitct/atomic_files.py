"""The one place where every step writes its files: whole or not at all, and a full disk or an
unwritable folder said in one line.

A file is first rendered in memory, so its size is known, then written beside its target and
renamed into place: an interrupted or failed write never leaves a partial file where the next
step (or a rerun) would take it as complete. Libraries that write through their own C++ streams
(torch.save) fail with a bare "iostream error" on a full disk; rendering them in memory moves
the write here, where the operating system's reason (ENOSPC, EACCES, ...) is seen.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vitct.errors import UserError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


class OutputError(UserError):
    """A file could not be written; the message names it, the cause and what to do. cause is
    the operating system's error, for callers that word their own advice (`vitct predict`)."""

    def __init__(self, message: str, cause: OSError | None = None):
        super().__init__(message)
        self.cause = cause


def write_output(path: str | Path, render: Callable[[BinaryIO], object]) -> None:
    """render(file) writes the content; it lands at path whole, or path is left as it was."""
    buffer = io.BytesIO()
    render(buffer)
    write_bytes(path, buffer.getbuffer())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        # A device or pipe (/dev/null): written to, never replaced.
        try:
            _write_file(path, data)
        except OSError as e:
            raise OutputError(explain_write_failure(e, path, len(data)), e) from None
        return
    partial = path.with_name(f".{path.name}.partial")
    try:
        if path.is_dir():  # os.replace would say "Is a directory" only after the whole write
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(partial, data)
        os.replace(partial, path)
    except OSError as e:
        try:
            partial.unlink(missing_ok=True)
        except OSError:  # a read-only mount refuses even this; the cause is the write's
            pass
        raise OutputError(explain_write_failure(e, path, len(data)), e) from None


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Raise the OSError that writing path (a file, or with folder=True a folder to write files
    into) would meet: found in a moment with an empty probe file, rather than after the work.

    Nothing is created: missing folders are probed through their nearest existing parent, as
    write_bytes creates them there.
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if path.exists() and not folder and not path.is_file():
        return  # a device such as /dev/null: written in place
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    where = path if folder else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():  # a file stands where a folder must be (/proc/version/out.csv)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(where))
    probe = where / f".vitct-write-check-{secrets.token_hex(4)}"
    try:
        _write_file(probe, b"")
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def blocking_file(path: str | Path) -> Path | None:
    """The file that stands where a folder on the way to path must be, if any."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def is_write_failure(error: OSError) -> bool:
    """A full disk, an exhausted quota or a folder that may not be written."""
    return error.errno in _FULL | _DENIED


def _write_file(path: Path, data: bytes | memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)


def explain_write_failure(error: OSError, path: str | Path, needed: int | None = None) -> str:
    """One line for a failed write: which file, why, how much space it needed, what to do."""
    folder = _existing_folder(Path(path))
    size = f" ({_mib(needed)} needed)" if needed is not None else ""
    if error.errno in _FULL:
        free = _free_bytes(folder)
        space = f", {_mib(free)} free" if free is not None else ""
        return (
            f"cannot write '{path}'{size}: the disk holding '{folder}' is full{space} "
            f"({error.strerror}). Free some space there (or move results/ to a larger disk) "
            "and run again: finished steps are kept, and nothing partial was left."
        )
    if error.errno in _DENIED:
        return (
            f"cannot write '{path}'{size}: {error.strerror} for '{folder}'. Make that folder "
            "writable (or run from a folder you can write to) and run again."
        )
    if error.errno == errno.EISDIR or Path(path).is_dir():
        return f"cannot write '{path}': '{path}' is a folder. Name a file instead and run again."
    blocking = blocking_file(path)
    if blocking is not None or error.errno in (errno.ENOTDIR, errno.EEXIST):
        where = f"'{blocking}'" if blocking is not None else "a folder on its way"
        return (
            f"cannot write '{path}': {where} is a file, not a folder. Write elsewhere (or move "
            "that file) and run again."
        )
    return f"cannot write '{path}'{size}: {error.strerror or error}. Check the disk and run again."


def _existing_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
