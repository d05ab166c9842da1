"""Output files: overwrite checks, hidden temporaries beside an output, and atomic writes.

Every posecli output is written under a temporary name in its own folder and renamed into place
when complete (``os.replace``, atomic within a folder), so no reader ever sees a partial file
under a final name. Temporary files are named ``.NAME.PID-RANDOM.part`` (or ``.mp4``);
:func:`check_output` removes those that processes no longer running left behind (killed with
SIGKILL, a power cut). Imports only the standard library and ``posecli.errors``: any module may
use it.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from posecli.errors import OutputError

logger = logging.getLogger(__name__)

#: Hidden temporary files of posecli: ``.NAME.PID-RANDOM.part|.mp4``, ``.NAME.PID.tmp`` (older).
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)(?:-[0-9a-f]{8})?\.(?:part|mp4|tmp)")


def error_reason(error: BaseException) -> str:
    """The operating system's words for an OSError (``No space left on device``), else str."""
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def check_output(path: Path, *, force: bool, directory: bool = False) -> None:
    """Make sure ``path`` may be written: absent (or ``force``) and in a writable folder.

    Missing parent folders are created (``path`` itself too when ``directory``).

    Raises:
        OutputError: the output exists without ``force``, is the wrong kind of entry, or its
            folder cannot be created.
    """
    if directory and path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a directory")
    if not directory and path.is_dir():
        raise OutputError(f"{path} is a directory")
    if not directory and path.exists() and not force:
        raise OutputError(f"{path} exists (use --force to overwrite)")
    folder = path if directory else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create directory {folder}: {error.strerror or error}") from error
    remove_stale_temporaries(folder, None if directory else path.name)


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (when unsure: yes)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files that dead processes left in ``folder``; return them.

    Only files of :func:`temporary_path`'s pattern whose process no longer runs are removed,
    and with ``name`` only those of that output. Failures are logged, never raised.
    """
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMPORARY_NAME.fullmatch(entry)
        if match is None or (name is not None and match["name"] != name):
            continue
        if not _process_alive(int(match["pid"])):
            stale = folder / entry
            if remove_quietly(stale):
                removed.append(stale)
    if removed:
        logger.info("removed %d temporary files of stopped runs from %s", len(removed), folder)
    return removed


def temporary_path(path: Path, suffix: str = ".part") -> Path:
    """Create an empty, unique hidden file beside ``path`` (same folder, so renames are atomic).

    Raises:
        OutputError: the folder is not writable.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        with open(temporary, "xb"):
            pass
    except OSError as error:
        raise OutputError(f"cannot write to {path.parent}: {error.strerror or error}") from error
    return temporary


def remove_quietly(path: Path) -> bool:
    """Delete ``path`` if it exists; a failure is logged (one line), not raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("could not remove temporary file %s: %s", path, error_reason(error))
        return False
    return True


def write_atomically(
    path: Path,
    data: bytes | Callable[[BinaryIO], object],
    *,
    temporary: Path | None = None,
    name: str | None = None,
) -> Path:
    """Write the file ``path`` whole or not at all; return ``path``.

    ``data`` (bytes, or a function that writes into the open binary file, e.g. ``torch.save``)
    goes into ``temporary`` (default: a new :func:`temporary_path` beside ``path``), which is
    flushed and fsynced, then renamed over ``path`` with ``os.replace``. On failure the
    temporary is removed and ``path`` is left as it was.

    Raises:
        OutputError: ``cannot write NAME: reason``, NAME being ``name`` or the path; for an
            unwritable folder, a full disk, or a writer's ``OSError`` or ``RuntimeError``.
    """
    temporary = temporary_path(path) if temporary is None else temporary
    try:
        with open(temporary, "wb") as file:
            if callable(data):
                data(file)
            else:
                file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save raises RuntimeError on write errors
        remove_quietly(temporary)
        raise OutputError(f"cannot write {name or path}: {error_reason(error)}") from error
    return path


def move_into_place(staged: Path, path: Path) -> Path:
    """Rename the complete file ``staged`` to ``path`` (same file system: atomic); return ``path``.

    Raises:
        OutputError: ``cannot write PATH: reason``; ``staged`` is left where it was.
    """
    try:
        os.replace(staged, path)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error_reason(error)}") from error
    return path
