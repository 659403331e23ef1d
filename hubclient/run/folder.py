"""Run folders: Parquet tables written atomically, a manifest, resumable parts.

Layout of one run::

    results/<run-id>/
        manifest.json          what produced the run (model, options, versions, input hash, …)
        <table>.parquet        one long-format table per result kind; appears only when complete
        plots/<name>.html|png  charts drawn from the Parquet alone (``hub plot`` redraws them)
        .parts/<table>/part-<batch>.parquet   per-batch results while running; removed at the end

Every file is written to a temporary name in the same folder and renamed into place, so a
reader never sees half a file. A run that stops half-way keeps its finished batches under
``.parts`` and is continued with ``--resume RUN_DIR``. An existing run is never overwritten.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.fs import atomic_write, write_json, write_parquet

__all__ = ["MANIFEST", "PARTS", "RunDir", "check_output", "part_ok", "process_alive", "run_state", "atomic_write", "list_runs", "merge_parts", "new_run_id", "write_json", "write_parquet"]

MANIFEST = "manifest.json"
PARTS = ".parts"


def new_run_id(analysis: str, tag: str) -> str:
    """A sortable run id: ``<UTC time>-<analysis>-<tag>`` (tag: a short hash of the inputs)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{analysis}-{tag[:6]}"


#: Uncompressed bytes of rows a merge holds at once (:func:`merge_parts`).
MERGE_BUDGET = 8 << 20


def merge_parts(parts: list[Path], keys: list[str], out: Path, budget: int = MERGE_BUDGET) -> int:
    """Merge Parquet parts into one file sorted by ``keys``, holding about ``budget`` bytes.

    The result equals ``concat(parts).sort(keys, maintain_order=True)`` (parts in the given
    order), written atomically. Tables larger than ``budget`` (uncompressed, from the parts'
    metadata) are written in windows of consecutive values of the first key: each window is
    read from all parts with a filter, sorted and appended as row groups, so memory stays
    bounded by the window (e.g. ``vectors`` sorted by layer is merged a few layers at a time)
    instead of growing with the number of sentences.

    Args:
        parts: the part files (same schema), in batch order.
        keys: columns to sort by (may be empty: parts are concatenated in order).
        out: the merged file.
        budget: bytes of uncompressed rows per window.

    Returns:
        rows written.
    """
    import polars as pl
    import pyarrow.parquet as pq

    if not parts:
        write_parquet(out, pl.DataFrame())
        return 0
    rows = size = 0
    for part in parts:
        meta = pq.ParquetFile(part).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            size += meta.row_group(g).total_byte_size
    if size <= budget or not keys or rows == 0:
        frame = pl.concat([pl.read_parquet(p) for p in parts], how="vertical")
        if keys and frame.height:
            frame = frame.sort(keys, maintain_order=True)
        write_parquet(out, frame)
        return frame.height
    first = keys[0]
    values = []
    for part in parts:  # one small column at a time
        values.append(pl.from_arrow(pq.read_table(part, columns=[first])))
    per_value = pl.concat(values).group_by(first).len().sort(first)
    del values
    per_window = max(1, budget * rows // size)
    windows: list[list[Any]] = []  # [low, high] of the first key, inclusive
    held = 0
    for value, count in per_value.iter_rows():
        if windows and held + count <= per_window:
            windows[-1][1] = value
            held += count
        else:
            windows.append([value, value])
            held = count

    def write(tmp: Path) -> None:
        writer = None
        try:
            for low, high in windows:
                pieces = []
                for part in parts:  # one part decoded at a time; only the window's rows kept
                    piece = pq.read_table(part, filters=[(first, ">=", low), (first, "<=", high)])
                    if piece.num_rows:
                        pieces.append(pl.from_arrow(piece))
                frame = pl.concat(pieces, how="vertical")
                del pieces
                table = frame.sort(keys, maintain_order=True).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                del frame, table
        finally:
            if writer is not None:
                writer.close()

    atomic_write(out, write)
    return rows


def check_output(root: Path, run_id: str | None) -> None:
    """Check, before anything is loaded or written, that a new run ``root/run_id`` can be made.

    Args:
        root: ``--out``.
        run_id: ``--name``, or ``None`` for a generated id.

    Raises:
        HubError: a name that is not one plain folder name (``/``, ``..``, empty), an ``--out``
            that is a file, lies inside an existing run folder, or cannot be written, or a run
            folder that already exists.
    """
    root = Path(root)
    if run_id is not None:
        if not run_id.strip() or run_id in (".", "..") or "/" in run_id or "\\" in run_id or "\0" in run_id:
            raise HubError(f"--name {run_id!r} is not a plain folder name; give a name without '/' or '..', e.g. --name capitals-1")
    for folder in (root, *root.resolve().parents):
        if (folder / MANIFEST).is_file():
            if folder == root and run_id is not None and run_id in _sub_runs(folder):
                continue  # a multi-model run's own sub-run (neurons --model repeated)
            raise HubError(f"--out {root} is inside the run folder {folder}; give a results folder such as {folder.parent}")
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise HubError(f"--out {root}: {existing} is a file, not a folder; give a folder for the results")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise HubError(f"--out {root}: {existing} is not writable; give a folder you can write to (e.g. --out ./results)")
    if run_id is not None and (root / run_id).exists():
        raise HubError(f"run folder {root / run_id} already exists; choose another --name, or continue it with --resume {root / run_id}")


def _sub_runs(folder: Path) -> list[str]:
    """The sub-run names a multi-model run's manifest lists (``runs``), else none."""
    try:
        runs = json.loads((folder / MANIFEST).read_text()).get("runs")
    except (OSError, ValueError):
        return []
    return [str(r) for r in runs] if isinstance(runs, list) else []


def part_ok(path: Path) -> bool:
    """True when ``path`` is a whole Parquet file (its footer reads); a zero-byte or truncated
    part left by a crash is not."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except Exception:  # pyarrow raises ArrowInvalid/OSError for damaged files
        return False
    return True


def process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(manifest: dict[str, Any]) -> str:
    """The state ``hub runs`` shows: ``complete``, ``submitted`` (detached jobs on NDIF),
    ``running``, ``interrupted`` (stopped by Ctrl-C, or its process is gone: killed, crashed,
    machine restarted) or ``failed``."""
    status = str(manifest.get("status"))
    if status != "running":
        return status
    owner = manifest.get("process") or {}
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not process_alive(owner["pid"]):
        return "interrupted"
    return "running"


class RunDir:
    """One run folder (see the module docstring for its layout)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---------------------------------------------------------------- creation / opening
    @classmethod
    def create(cls, root: Path, run_id: str) -> "RunDir":
        """Create ``root/run_id``.

        Raises:
            HubError: the folder already exists (runs are never overwritten).
        """
        check_output(root, run_id)
        path = Path(root) / run_id
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise HubError(f"run folder {path} already exists; choose another --name, or continue it with --resume {path}") from None
        except OSError as exc:
            raise HubError(f"cannot create the run folder {path} ({exc.strerror}); give another --out") from None
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """Open an existing run folder.

        Raises:
            HubError: no such folder, or it has no ``manifest.json``.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise HubError(f"{path} is not a hub run folder (no {MANIFEST})")
        return cls(path)

    # ---------------------------------------------------------------- manifest
    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed ``manifest.json``."""
        return json.loads((self.path / MANIFEST).read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace ``manifest.json`` atomically."""
        write_json(self.path / MANIFEST, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest and write it back; returns the new manifest."""
        manifest = self.manifest
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    # ---------------------------------------------------------------- parts
    def part_path(self, table: str, batch: int) -> Path:
        """Where batch ``batch`` of ``table`` is stored while the run is incomplete."""
        return self.path / PARTS / table / f"part-{batch:06d}.parquet"

    def done_batches(self, tables: list[str]) -> set[int]:
        """Batches whose parts exist, whole, for every one of ``tables`` (finished before a
        resume). A damaged part (zero bytes or truncated by a crash or a full disk) is removed
        with a warning, so its batch runs again."""
        import warnings

        done: set[int] | None = None
        for table in tables:
            folder = self.path / PARTS / table
            have = set()
            for part in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
                if part_ok(part):
                    have.add(int(part.stem.split("-")[1]))
                else:
                    warnings.warn(f"{part} is damaged (zero bytes or truncated); its batch runs again", stacklevel=2)
                    part.unlink()
            done = have if done is None else done & have
        return done or set()

    def write_parts(self, batch: int, frames: dict[str, Any]) -> None:
        """Store one batch's rows, one Parquet part per table, each atomically."""
        for table, frame in frames.items():
            write_parquet(self.part_path(table, batch), frame)

    def finalize(self, tables: dict[str, list[str]]) -> dict[str, int]:
        """Merge the parts of each table into ``<table>.parquet`` (sorted by the given keys).

        Args:
            tables: table name -> columns to sort by, so the output does not depend on the
                batch order.

        Returns:
            rows written per table.
        """
        counts = {}
        for table, keys in tables.items():
            folder = self.path / PARTS / table
            parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
            counts[table] = merge_parts(parts, keys, self.path / f"{table}.parquet")
        for table in tables:
            folder = self.path / PARTS / table
            for p in folder.glob("*"):
                p.unlink()
            if folder.is_dir():
                folder.rmdir()
        parts_root = self.path / PARTS
        if parts_root.is_dir() and not any(parts_root.iterdir()):
            parts_root.rmdir()
        return counts

    # ---------------------------------------------------------------- reading
    def table(self, name: str) -> Any:
        """Read ``<name>.parquet`` as a polars DataFrame.

        Raises:
            HubError: the table is missing (the run has not finished).
        """
        import polars as pl

        path = self.path / f"{name}.parquet"
        if not path.is_file():
            raise HubError(f"{path} does not exist: the run is incomplete (continue it with --resume {self.path})")
        return pl.read_parquet(path)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Manifests of the runs under ``root``, oldest first (folders without one are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for path in sorted(root.iterdir()):
        if (path / MANIFEST).is_file():
            try:
                manifest = json.loads((path / MANIFEST).read_text())
            except json.JSONDecodeError:
                continue
            manifest["_path"] = str(path)
            runs.append(manifest)
    return runs
