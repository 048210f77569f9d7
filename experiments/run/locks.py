"""The lock that keeps two runs out of one ``--out``."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator

from experiments.run import distributed as D
from experiments.run.errors import RunError


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.run.lock`` (an exclusive ``fcntl`` lock) for the run: a second run in the same ``--out``
    stops at once with :class:`RunError` instead of overwriting the first one's files. Under ``torchrun`` rank 0
    holds it."""
    if not D.is_main():
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".run.lock", "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another run is using {out} (it holds {out / '.run.lock'}); wait for it to finish or "
                           "choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
