"""Curvature schedules: fixed, learnable, or the paper's warm-up ``R = 11 → 2`` (MATH.md §5)."""

from __future__ import annotations

import torch

from .constants import WARMUP_EPOCHS, WARMUP_FINAL_RADIUS, WARMUP_START_RADIUS

_MODES = ("fixed", "learnable", "warmup")
_AFTER = ("learnable", "fixed")


class CurvatureSchedule:
    r"""Sets a manifold's curvature parameter ``k`` (curvature ``-1/k``, radius ``R = sqrt(k)``) each epoch.

    Modes:

    * ``"fixed"``: ``k`` is frozen at its current value (``requires_grad = False``).
    * ``"learnable"``: ``k`` is trained from its current value.
    * ``"warmup"`` (the paper): ``R = start_radius - epoch`` for ``epoch < epochs`` (``k = R²``; with the defaults
      R = 11, 10, …, 2 over epochs 0–9), frozen during the warm-up; from epoch ``epochs`` on, ``k`` is trained
      starting from ``final_radius²`` (``after="learnable"``, the VAE experiments) or stays frozen at it
      (``after="fixed"``, the graph experiments).

    Call :meth:`step` at the start of every epoch. Manifolds without curvature (``Euclidean``) are left alone,
    so the same training loop serves every model. Put ``manifold.curvature_parameter`` (a ``Lorentz``'s ``k_raw``) in the optimiser from the start: while
    it is frozen its gradient is ``None`` and Adam skips it.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=1.0)
        >>> sched = CurvatureSchedule(M, "warmup")
        >>> [round(sched.step(e), 3) for e in (0, 1, 9, 10)]
        [121.0, 100.0, 4.0, 4.0]
        >>> M.curvature_parameter.requires_grad
        True
    """

    def __init__(
        self,
        manifold: torch.nn.Module,
        mode: str = "warmup",
        *,
        after: str = "learnable",
        start_radius: float = WARMUP_START_RADIUS,
        final_radius: float = WARMUP_FINAL_RADIUS,
        epochs: int = WARMUP_EPOCHS,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"curvature mode must be one of {_MODES}; got {mode!r}")
        if after not in _AFTER:
            raise ValueError(f"after (what follows the warm-up) must be one of {_AFTER}; got {after!r}")
        if not (start_radius > 0 and final_radius > 0 and epochs >= 1):
            raise ValueError(
                f"need start_radius > 0, final_radius > 0 and epochs >= 1; got {start_radius}, {final_radius}, {epochs}"
            )
        self.manifold = manifold
        self.mode = mode
        self.after = after
        self.start_radius = float(start_radius)
        self.final_radius = float(final_radius)
        self.epochs = int(epochs)

    @property
    def has_curvature(self) -> bool:
        """Whether the manifold has a curvature parameter to schedule (``curvature_parameter`` is not ``None``)."""
        return self.manifold.curvature_parameter is not None

    def radius_at(self, epoch: int) -> float | None:
        """The radius the schedule imposes at ``epoch`` (``None``: it imposes none, ``k`` is left as is)."""
        if self.mode != "warmup":
            return None
        if epoch < self.epochs:
            return max(self.start_radius - epoch, self.final_radius)
        return self.final_radius if epoch == self.epochs or self.after == "fixed" else None

    def step(self, epoch: int) -> float | torch.Tensor | None:
        """Apply the schedule for ``epoch`` (0-based) and return the resulting ``k``: a float where the schedule
        sets it, a detached 0-dim tensor where ``k`` is trained (read it when convenient: reading it is a host sync
        on a GPU), ``None`` on ℝⁿ. Nothing is read from the device."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0; got {epoch}")
        if not self.has_curvature:
            return None
        param: torch.nn.Parameter = self.manifold.curvature_parameter
        radius = self.radius_at(epoch)
        imposed = radius is not None and not (self.after == "learnable" and epoch > self.epochs)
        if imposed:
            self.manifold.set_k(radius * radius)
        if self.mode == "fixed":
            trainable = False
        elif self.mode == "learnable":
            trainable = True
        else:
            trainable = epoch >= self.epochs and self.after == "learnable"
        if param.requires_grad != trainable:
            param.requires_grad_(trainable)
        if not trainable:
            param.grad = None
        if imposed:
            return float(radius * radius)
        return self.manifold.k.detach().clone()
