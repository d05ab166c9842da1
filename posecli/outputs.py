"""What every run does with its output paths: checked before any model loads (existing files,
standard output named twice, an output naming an input), JSON written whole, and the summary
line's list of what was written. Library code: errors are ``PoseCliError`` subclasses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posecli.errors import UsageError
from posecli.io.files import STDOUT, check_output, write_atomically


def check_outputs(
    outputs: Sequence[Path | None], force: bool, directories: Sequence[Path | None] = ()
) -> None:
    """OutputError for an output that exists without ``force`` (before any model loads)."""
    for path in outputs:
        if path is not None:
            check_output(path, force=force)
    for path in directories:
        if path is not None:
            check_output(path, force=force, directory=True)


def check_standard_output(*paths: Path | None) -> None:
    """UsageError when more than one output is standard output (``-``)."""
    if sum(str(path) == STDOUT for path in paths if path is not None) > 1:
        raise UsageError("only one output can be standard output (-)")


def same_file(a: Path | str, b: Path | None) -> bool:
    """Whether ``a`` (a path, or a URL: never) and ``b`` name the same file."""
    return b is not None and "://" not in str(a) and Path(a).resolve() == b.resolve()


def openpose_folder(explicit: Path | None, beside: Path) -> Path:
    """``explicit``, else ``NAME_openpose/`` next to the main output ``beside``."""
    return explicit if explicit is not None else beside.with_name(f"{beside.stem}_openpose")


def write_json_atomically(path: Path, data: Any, *, force: bool) -> Path:
    """Write ``data`` as indented JSON, whole or not at all (OutputError)."""
    check_output(path, force=force)
    return write_atomically(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def list_written(*paths: Path | None) -> str:
    """The outputs of a run, for its summary line (``-``: standard output)."""
    names = {STDOUT: "standard output"}
    return ", ".join(names.get(str(path), str(path)) for path in paths if path is not None)
