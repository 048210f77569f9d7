"""Timing models against each other: a :class:`Case` per model, timed round-robin by :func:`time_cases` (shared by
the flow, MAF and graph benchmarks)."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Case:
    """A model to time: ``step()`` runs one training step; ``group`` is ``"ours"``, ``"peer"`` or ``"manifold"``."""

    name: str
    group: str
    step: Callable[[], None]
    note: str = ""
    times: list[float] = field(default_factory=list)


def quartiles(ts: list[float]) -> tuple[float, float, float]:
    """``(first quartile, median, third quartile)`` of ``ts`` (one time: that time three times, e.g. ``--epochs 1``).

    Example:
        >>> quartiles([2.0])
        (2.0, 2.0, 2.0)
    """
    if len(ts) == 1:
        return ts[0], ts[0], ts[0]
    q = statistics.quantiles(ts, n=4, method="inclusive")
    return q[0], statistics.median(ts), q[2]


def time_cases(cases: list[Case], repeats: int, warmup: int, device: torch.device, clock: str = "wall") -> None:
    """Warm up, then time one step of every case per repeat, rotating the order each repeat.

    ``clock="cpu"`` measures the process's CPU time instead of wall time (CPU device only): with
    ``--threads 1`` on a shared machine it excludes the time the process waits for a core.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    now = time.process_time if clock == "cpu" else time.perf_counter
    for c in cases:
        for _ in range(warmup):
            c.step()
    sync()
    for r in range(repeats):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for c in order:
            sync()
            t0 = now()
            c.step()
            sync()
            c.times.append((now() - t0) * 1e3)


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the processor's (as far as ``platform`` knows it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
