"""Output files: overwrite checks, hidden temporaries beside an output, and atomic writes.

Every posecli output is written under a temporary name in its own folder and renamed into place
when complete (``os.replace``, atomic within a folder), so no reader ever sees a partial file
under a final name. Temporary files are named ``.NAME.PID-RANDOM.part`` (or ``.mp4``), NAME
cut short where the whole would pass the file system's limit (:data:`NAME_MAX`);
:func:`check_output` removes those that processes no longer running left behind (killed with
SIGKILL, a power cut), and creates one to prove the folder writable before any work.

Outputs that are not regular files are never replaced (:func:`written_through`): ``-``
(standard output), character devices (``/dev/null``, ``/dev/full``, a terminal), FIFOs and
what ``/dev/stdout`` or ``/proc/self/fd/N`` name are written through in place
(:func:`open_through`); block devices and sockets are refused by :func:`check_output`, and so
is any of them where a regular file is needed (``regular=True``: an MP4). Imports only the
standard library and ``posecli.errors``: any module may use it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from posecli.errors import OutputError

logger = logging.getLogger(__name__)

#: Hidden temporary files of posecli: ``.NAME.PID-RANDOM.part|.mp4``, ``.NAME.PID.tmp`` (older).
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)(?:-[0-9a-f]{8})?\.(?:part|mp4|tmp)")

#: Longest file name, bytes (NAME_MAX of Linux and macOS file systems).
NAME_MAX = 255

#: Bytes of a temporary name around NAME: dots, a 7-digit pid, ``-RANDOM`` and ``.part``.
_TEMPORARY_AFFIXES = len("..1234567-12345678.part")

#: The name of standard output as an output (``--json -``): written through, never a file.
STDOUT = "-"

#: Entries that are neither regular files nor folders, as check_output words them: the
#: first are written through, the others refused.
_THROUGH_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFIFO: "a FIFO"}
_REFUSED_KINDS = {stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def error_reason(error: BaseException) -> str:
    """The operating system's words for an OSError (``No space left on device``), else str."""
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def check_output(
    path: Path, *, force: bool, directory: bool = False, regular: bool = False
) -> None:
    """Make sure ``path`` may be written: absent (or ``force``) and in a writable folder, or
    an output written through in place (:func:`written_through`; no ``force`` needed, nothing
    is replaced) unless ``regular`` asks for a regular file.

    Missing parent folders are created (``path`` itself too when ``directory``), and a
    temporary file is created there and removed again: a folder that takes no files (no
    permission, read-only, ``/proc``) fails here, before any work.

    Raises:
        OutputError: the output exists without ``force``, is the wrong kind of entry (a block
            device, a socket; anything but a regular file with ``regular``), its name is too
            long, or its folder cannot be created or written.
    """
    if not directory and written_through(path):
        if regular:
            raise OutputError(f"{path} is not a regular file: this output needs one")
        return
    try:
        kind = _entry_kind(path)
    except OSError as error:  # a name too long, a folder that cannot be searched
        raise OutputError(f"cannot write {path}: {error_reason(error)}") from error
    if directory and kind not in (None, stat.S_IFDIR):
        raise OutputError(f"{path} is a file, not a directory")
    if not directory and kind == stat.S_IFDIR:
        raise OutputError(f"{path} is a directory")
    if kind in _REFUSED_KINDS:
        raise OutputError(f"{path} is {_REFUSED_KINDS[kind]}: posecli writes files, not to it")
    if not directory and kind is not None and not force:
        raise OutputError(f"{path} exists (use --force to overwrite)")
    folder = path if directory else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create directory {folder}: {error.strerror or error}") from error
    remove_stale_temporaries(folder, None if directory else path.name)
    remove_quietly(temporary_path(folder / "probe" if directory else path))


def _entry_kind(path: Path) -> int | None:
    """``stat.S_IFMT`` of what ``path`` names (links followed), ``None`` when nothing does.

    Raises:
        OSError: the name is too long, or a folder on the way cannot be searched.
    """
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def written_through(path: Path | str) -> bool:
    """Whether the output ``path`` is written through in place rather than replaced: ``-``
    (:data:`STDOUT`), a character device or FIFO, or a file descriptor's entry in ``/proc``
    (``/dev/stdout``, ``/dev/fd/1``: whatever the descriptor holds, a regular file included).
    Such an output is never renamed over, truncated or removed."""
    if str(path) == STDOUT:
        return True
    try:
        kind = _entry_kind(Path(path))
    except OSError:
        return False  # check_output says why
    if kind in _THROUGH_KINDS:
        return True
    return kind is not None and _through_pseudo_files(Path(path))


#: A process's open file as ``/proc`` shows it: what ``/dev/stdout`` and ``/dev/fd/N`` reach.
_DESCRIPTOR = re.compile(r"/proc/(?:self|\d+)/fd/\d+")


def _through_pseudo_files(path: Path) -> bool:
    """Whether ``path`` is an open file descriptor's entry in ``/proc``, or a link to one
    (``/dev/stdout``, ``/dev/fd/1``)."""
    if _DESCRIPTOR.fullmatch(str(path.parent.resolve() / path.name)):
        return True
    return path.is_symlink() and bool(_DESCRIPTOR.fullmatch(os.readlink(path)))


def open_through(path: Path | str) -> BinaryIO:
    """Open a :func:`written_through` output for writing, unbuffered (each write reaches the
    device or pipe at once): :data:`STDOUT` as a copy of standard output's descriptor; a file
    in append mode, so that one standard output was redirected to keeps what it holds.

    Raises:
        OSError: it cannot be opened.
    """
    if str(path) == STDOUT:
        return os.fdopen(os.dup(1), "wb", buffering=0)
    return open(path, "ab", buffering=0)  # noqa: SIM115 — the caller closes it


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
        if match is None or (name is not None and match["name"] != _temporary_stem(name)):
            continue
        if not _process_alive(int(match["pid"])):
            stale = folder / entry
            if remove_quietly(stale):
                removed.append(stale)
    if removed:
        logger.info("removed %d temporary files of stopped runs from %s", len(removed), folder)
    return removed


def _temporary_stem(name: str) -> str:
    """The NAME part of the temporary names of output ``name``: ``name`` cut to fit
    :data:`NAME_MAX` with the affixes (whole UTF-8 characters)."""
    room = NAME_MAX - _TEMPORARY_AFFIXES
    return name.encode()[:room].decode(errors="ignore")


def temporary_path(path: Path, suffix: str = ".part") -> Path:
    """Create an empty, unique hidden file beside ``path`` (same folder, so renames are atomic).

    Raises:
        OutputError: the folder is not writable.
    """
    stem = _temporary_stem(path.name)
    temporary = path.with_name(f".{stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        with open(temporary, "xb"):
            pass
    except OSError as error:
        reason = error_reason(error)
        if error.errno == errno.ENOENT and path.parent.is_dir():  # /proc, /sys
            reason = "it is a system folder that takes no new files"
        raise OutputError(f"cannot write to {path.parent}: {reason}") from error
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

    A :func:`written_through` output (``/dev/null``, a FIFO, standard output) is written in
    place instead, never replaced.
    """
    if written_through(path):
        return _write_through(path, data, name)
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


def _write_through(
    path: Path, data: bytes | Callable[[BinaryIO], object], name: str | None
) -> Path:
    """:func:`write_atomically` for a :func:`written_through` output: written in place."""
    try:
        with open_through(path) as file:
            if callable(data):
                data(file)
            else:
                file.write(data)
    except (OSError, RuntimeError) as error:
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
