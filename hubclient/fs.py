"""Atomic file writes: every file hub writes appears whole or not at all.

A file is written to a temporary name in the same folder and renamed into place (``os.replace``
is atomic on POSIX and Windows), so a reader, a crash or a full disk never leaves half a file
under the final name. Used by run folders, plots, caches and job records.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(path: Path, frame: Any) -> None:
    """Write a polars DataFrame to ``path`` atomically (zstd-compressed Parquet)."""
    atomic_write(path, lambda tmp: frame.write_parquet(tmp, compression="zstd"))


def write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (UTF-8, indented, keys in insertion order)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"))
