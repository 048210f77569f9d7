"""Files of a run written so that a reader never sees half of one: text and ``torch.save`` through a temporary
file and a rename, and the CSV that runs share (one row per run, appended under a lock)."""

from __future__ import annotations

import csv
import fcntl
import os
from pathlib import Path
from typing import Any

import torch


def save_synced(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path``, flushed to the disk."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a reader never sees a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    save_synced(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_csv_row(row: dict[str, Any], fields: list[str], path: Path) -> None:
    """Append ``row`` to the CSV ``path`` under an exclusive ``fcntl`` lock, so runs that share a CSV never
    interleave; the header (``fields``) is written once, by whoever finds the file empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # runs sharing one CSV append one at a time
        try:
            w = csv.DictWriter(f, fieldnames=fields)
            if f.seek(0, os.SEEK_END) == 0:  # empty: the first writer writes the header, under the lock
                w.writeheader()
            w.writerow(row)
            f.flush()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
