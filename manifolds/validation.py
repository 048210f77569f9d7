r"""The library's one switch for checks that read tensor values on the host.

A check such as "did ``cosh`` overflow float32?" or "are these node ids in range?" needs the value of a tensor on
the host: on a GPU that is a synchronisation (the CPU waits for every queued kernel), and under
``torch.compile`` it is a graph break. Such checks therefore never run on the hot path unless asked for, in the
style of ``torch.distributions``' ``validate_args``:

* **off (default)**: no operation of :mod:`manifolds`, :mod:`flows` or :mod:`vae` reads a tensor value on the host.
  A result that overflows its dtype (a point farther than ≈ 88.7·sqrt(k) from the origin in float32) comes back as
  ``inf`` / ``NaN``; node ids are checked once per graph (:meth:`vae.GraphVAE.prepare_graph`) and the experiments
  check that the latents are finite once per evaluation.
* **on** (:func:`set_validation`, the :func:`validation` context manager, or the environment variable
  ``RF_VALIDATE=1``): overflow raises ``ValueError`` where it happens, with the remedy; wrapped normals check their
  parameters (``validate_args``); :class:`vae.GraphVAE` checks node ids on every call.

Per-manifold input checks (``Lorentz(validate=True)``: every input finite and on the manifold) are separate and
also off by default. Under ``torch.compile`` and CUDA-graph capture the host-reading checks are skipped (they
cannot run there); validate with an eager call first.

Example:
    >>> import torch
    >>> from manifolds import Lorentz, validation
    >>> far = torch.tensor([100.0, 0.0])  # cosh(100) overflows float32
    >>> bool(torch.isinf(Lorentz().expmap0_spatial(far)).any())
    True
    >>> with validation():
    ...     Lorentz().expmap0_spatial(far)
    Traceback (most recent call last):
    ...
    ValueError: expmap0: the result overflows torch.float32 ...
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

__all__ = ["validation_enabled", "set_validation", "validation"]

#: environment variable that turns validation on for a whole process (``RF_VALIDATE=1``)
ENV_VAR = "RF_VALIDATE"

_enabled = os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def validation_enabled() -> bool:
    """Whether host-reading checks run now: the switch is on and we are not tracing (``torch.compile``) or
    capturing a CUDA graph, where a host read is impossible."""
    if not _enabled:
        return False
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def set_validation(enabled: bool) -> None:
    """Turn the host-reading checks on or off for the whole process (see the module docstring)."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def validation(enabled: bool = True) -> Iterator[None]:
    """Context manager: host-reading checks on (or off) inside the block, restored after it."""
    global _enabled
    before = _enabled
    _enabled = bool(enabled)
    try:
        yield
    finally:
        _enabled = before
