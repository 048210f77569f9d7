"""Checkpoints of a seed: written atomically, the previous one kept, the newest readable one loaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from experiments.run.errors import RunError
from experiments.run.files import file_errors, save_synced


def previous_checkpoint(ckpt: Path) -> Path:
    """Where the checkpoint before ``ckpt`` is kept (``checkpoint.prev.pt``)."""
    return ckpt.with_name(ckpt.stem + ".prev" + ckpt.suffix)


def save_checkpoint(state: dict[str, Any], ckpt: Path) -> None:
    """Write ``ckpt`` atomically and keep the one it replaces as :func:`previous_checkpoint` (so a checkpoint
    damaged after it was written, or a crash between the two renames, still leaves one to resume from)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    with file_errors(ckpt, "write", "make the run folder writable or give another --out"):
        save_synced(state, tmp)
        if ckpt.exists():
            os.replace(ckpt, previous_checkpoint(ckpt))
        os.replace(tmp, ckpt)


def load_checkpoint(ckpt: Path, apply: Callable[[dict[str, Any]], None] | None = None,
                    flow: str | None = None) -> dict[str, Any] | None:
    """The newest checkpoint of a seed that reads and loads: ``ckpt``, else the one kept back
    (``checkpoint.prev.pt``), saying so; ``None`` if neither exists. A checkpoint loads when it reads, records the
    flow ``flow`` (where both it and ``flow`` name one: a checkpoint of another model is refused) and ``apply(state)``
    (the job's ``load_state_dict``, whose flows refuse another flow's state dict) raises nothing.

    Raises:
        RunError: checkpoints exist but none loads (the message names them, why, and what to do).
    """
    problems = []
    for path in (ckpt, previous_checkpoint(ckpt)):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not {"job", "epoch", "history", "rng"} <= set(state):
                raise ValueError("it is not a checkpoint of this program")
            if flow is not None and state.get("flow", flow) != flow:
                raise ValueError(f"it is a checkpoint of the flow {state['flow']!r}, not {flow!r}")
            if apply is not None:
                apply(state["job"])
        except Exception as err:  # a truncated or foreign file: EOFError, RuntimeError (zip, shapes), ValueError, ...
            problems.append(f"{path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty'})")
            print(f"warning: the checkpoint {path} does not load ({problems[-1].split(' (', 1)[1][:-1]}); trying "
                  "the one before it", file=sys.stderr)
            continue
        if problems:
            print(f"resuming from {path} (epoch {state['epoch']}), the previous checkpoint", file=sys.stderr)
        return state
    if problems:
        raise RunError(f"no checkpoint of this seed loads: {'; '.join(problems)}. Delete {ckpt.parent} to "
                       "train this seed again from the start (the other seeds are kept), then run with --resume")
    return None
