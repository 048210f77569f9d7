"""Checkpoints of a seed: written atomically, the previous one kept, the newest readable one loaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from experiments.run.errors import RunError
from experiments.run.files import save_synced


def previous_checkpoint(ckpt: Path) -> Path:
    """Where the checkpoint before ``ckpt`` is kept (``checkpoint.prev.pt``)."""
    return ckpt.with_name(ckpt.stem + ".prev" + ckpt.suffix)


def save_checkpoint(state: dict[str, Any], ckpt: Path) -> None:
    """Write ``ckpt`` atomically and keep the one it replaces as :func:`previous_checkpoint` (so a checkpoint
    damaged after it was written, or a crash between the two renames, still leaves one to resume from)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    save_synced(state, tmp)
    if ckpt.exists():
        os.replace(ckpt, previous_checkpoint(ckpt))
    os.replace(tmp, ckpt)


def load_checkpoint(ckpt: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of a seed: ``ckpt``, else the one kept back; ``None`` if neither exists.

    Raises:
        RunError: checkpoints exist but none can be read (the message names them and what to do).
    """
    problems = []
    for path in (ckpt, previous_checkpoint(ckpt)):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not {"job", "epoch", "history", "rng"} <= set(state):
                raise ValueError("it is not a checkpoint of this program")
        except Exception as err:  # a truncated or foreign file: EOFError, RuntimeError (zip), UnpicklingError, ...
            problems.append(f"{path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty'})")
            print(f"warning: cannot read the checkpoint {path}; trying the one before it", file=sys.stderr)
            continue
        if problems:
            print(f"resuming from {path} (epoch {state['epoch']})", file=sys.stderr)
        return state
    if problems:
        raise RunError(f"no readable checkpoint for this seed: {'; '.join(problems)}. Delete {ckpt.parent} to "
                       "train this seed again from the start (the other seeds are kept), then run with --resume")
    return None
