"""Every file the command line reads or writes: written so that a reader never sees half of one (text and
``torch.save`` through a temporary file and a rename, the CSV that runs share appended under a lock), and read
(:func:`read_json`) so that a damaged file is one line naming it, what is wrong and what to do
(:class:`~experiments.run.errors.RunError`, exit 2), never a traceback. :func:`check_writable` tells, before
training, that ``--out`` or ``--csv`` cannot be written."""

from __future__ import annotations

import csv
import fcntl
import os
from pathlib import Path
from typing import Any

import contextlib
import json
from typing import Iterator

import torch

from experiments.run.errors import RunError


@contextlib.contextmanager
def file_errors(path: Path, action: str, fix: str) -> Iterator[None]:
    """Within the block, an ``OSError`` on ``path`` (permission, missing folder, full disk) becomes one
    :class:`RunError` line: the file, ``action`` (``"write"``, ``"read"``), the reason and ``fix``."""
    try:
        yield
    except PermissionError:
        raise RunError(f"cannot {action} {path}: permission denied; {fix}") from None
    except OSError as err:
        raise RunError(f"cannot {action} {path}: {err.strerror or err}; {fix}") from None


def read_json(path: Path, *, keys: tuple[str, ...] = (), fix: str = "move it away or repair it, then run again") -> Any:
    """The JSON in ``path``; a file that is not JSON, not an object where ``keys`` are asked for, lacks one of
    ``keys``, or cannot be read is a one-line :class:`RunError` naming the file and saying what to do (``fix``).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "selection.json"
        >>> _ = p.write_text('{"beta": ')
        >>> read_json(p)
        Traceback (most recent call last):
        ...
        experiments.run.errors.RunError: .../selection.json is damaged: not JSON (Expecting value: line 1 column 10 (char 9)); move it away or repair it, then run again
    """
    path = Path(path)
    with file_errors(path, "read", fix):
        text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise RunError(f"{path} is damaged: not JSON ({err}); {fix}") from None
    if keys:
        if not isinstance(data, dict):
            raise RunError(f"{path} is damaged: a JSON {type(data).__name__} where an object with "
                           f"{', '.join(keys)} belongs; {fix}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise RunError(f"{path} is damaged: no {', '.join(repr(k) for k in missing)}; {fix}")
    return data


def check_writable(folder: Path, *files: Path) -> None:
    """Raise a one-line :class:`RunError` unless ``folder`` (made if missing) and each of ``files`` (or the folder
    that will hold it) can be written: asked before training, so a run never trains to lose its results."""
    for path, is_dir in ((Path(folder), True), *((Path(f), False) for f in files)):
        target = path if is_dir or path.exists() else path.parent
        if is_dir or not path.exists():
            with file_errors(target, "create", "choose a folder you can write (--out / --csv)"):
                target.mkdir(parents=True, exist_ok=True)
        if not os.access(target, os.W_OK):
            flag = "--out" if is_dir else "--csv"
            raise RunError(f"cannot write {target}: permission denied; make it writable or give another {flag}")


def check_output(path: Path, flag: str) -> None:
    """Raise a one-line :class:`RunError` unless the file ``path`` (given by ``flag``, e.g. ``--out``) can be
    written: its folder is made if missing. Asked before the work, so that a command never computes to lose it."""
    path = Path(path)
    with file_errors(path.parent, "create", f"choose a folder you can write ({flag})"):
        path.parent.mkdir(parents=True, exist_ok=True)
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise RunError(f"cannot write {target}: permission denied; make it writable or give another {flag}")


def save_synced(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path``, flushed to the disk."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a reader never sees a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    with file_errors(path, "write", "make its folder writable or give another --out"):
        save_synced(obj, tmp)
        os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; an ``OSError`` is a one-line
    :class:`RunError` naming the file."""
    tmp = path.with_name(path.name + ".tmp")
    with file_errors(path, "write", "make its folder writable or give another --out"):
        tmp.write_text(text)
        os.replace(tmp, path)


def append_csv_row(row: dict[str, Any], fields: list[str], path: Path) -> None:
    """Append ``row`` to the CSV ``path`` under an exclusive ``fcntl`` lock, so runs that share a CSV never
    interleave; the header (``fields``) is written once, by whoever finds the file empty."""
    with file_errors(path, "append to", "make it writable or give another --csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a", newline="")
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # runs sharing one CSV append one at a time
        try:
            w = csv.DictWriter(f, fieldnames=fields)
            if f.seek(0, os.SEEK_END) == 0:  # empty: the first writer writes the header, under the lock
                w.writeheader()
            w.writerow(row)
            f.flush()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
