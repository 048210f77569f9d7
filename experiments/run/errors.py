"""How a run ends early or cannot go on: the errors the command line turns into exit codes."""

from __future__ import annotations

from pathlib import Path


class StopRequested(RuntimeError):
    """Raised by the hidden ``--stop-after N`` option once epoch ``N`` is checkpointed (simulates a kill)."""


class RunError(ValueError):
    """A run cannot start or continue as asked (a different config on ``--resume``, unreadable checkpoints); the
    message says what was found and what to do. The command line prints it and exits with 2."""


class Interrupted(StopRequested):
    """Raised after Ctrl-C (SIGINT): the epoch in progress (``epoch`` of ``epochs``) was finished and checkpointed
    to ``checkpoint``; ``--resume`` continues."""

    def __init__(self, epoch: int, epochs: int, checkpoint: Path) -> None:
        self.epoch, self.epochs, self.checkpoint = epoch, epochs, checkpoint
        super().__init__(f"interrupted after epoch {epoch} of {epochs}; the checkpoint {checkpoint} holds it: "
                         "run the same command with --resume to continue")
