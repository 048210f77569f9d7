"""What the flows and the VAEs need from a manifold, beyond geoopt's interface.

Both :class:`~manifolds.Euclidean` and :class:`~manifolds.Lorentz` implement this mixin, so code above the
geometry (wrapped normal, flows, VAEs) is written once, in *tangent coordinates at the origin*: an ``n``-vector
``v`` stands for the tangent vector ``(0, v)`` at ``o`` (Lorentz) or for ``v`` itself (Euclidean).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class ManifoldOps:
    """Mixin: input validation and the tangent-coordinate API shared by every manifold of the library."""

    #: when True, every operation checks its inputs (finite, right size, on the manifold / tangent space)
    validate: bool = False
    #: intrinsic dimension ``n`` if fixed at construction (then sizes are checked), else ``None``
    dim: int | None = None

    # -- sizes --------------------------------------------------------------------------------------------
    def ambient_dim(self, n: int) -> int:  # pragma: no cover - overridden
        """Number of ambient coordinates of a point of intrinsic dimension ``n``."""
        raise NotImplementedError

    def intrinsic_dim(self, x: Tensor) -> int:  # pragma: no cover - overridden
        """Intrinsic dimension ``n`` of the points ``x`` (ambient coordinates last)."""
        raise NotImplementedError

    def same_as(self, other: object) -> bool:
        """Whether ``other`` is this manifold or an interchangeable copy (same kind and, where there is one, the
        same fixed curvature): flows on either can be composed. Reads values on the host (construction time only)."""
        return self is other or (type(self) is type(other) and self.name == "Euclidean")

    # -- validation ---------------------------------------------------------------------------------------
    def _check_size(self, x: Tensor, what: str) -> None:
        if x.dim() == 0:
            raise ValueError(f"{what} must have at least one dimension (coordinates last); got a scalar")
        expected_min = self.ambient_dim(1)
        if x.size(-1) < expected_min:
            raise ValueError(
                f"{what} has {x.size(-1)} coordinates in its last dimension; {self.name} points need at least "
                f"{expected_min} (intrinsic dimension n >= 1 has {self.ambient_dim(1)}+ coordinates)"
            )
        if self.dim is not None and x.size(-1) != self.ambient_dim(self.dim):
            raise ValueError(
                f"{what} has {x.size(-1)} coordinates in its last dimension, but this {self.name} manifold has "
                f"dimension {self.dim} and uses {self.ambient_dim(self.dim)} ambient coordinates"
            )

    def _check_same_size(self, x: Tensor, y: Tensor, dim: int = -1) -> None:
        """Two points of one manifold have as many coordinates (a shape check: no values are read)."""
        if x.size(dim) != y.size(dim):
            raise ValueError(
                f"x has {x.size(dim)} coordinates and y has {y.size(dim)} in dimension {dim}: points of one "
                f"{self.name} manifold have the same number (n + 1 on the hyperboloid)"
            )

    def _check_finite(self, x: Tensor, what: str) -> None:
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"{what} contains {bad} non-finite value(s) (NaN or inf); check the upstream computation "
                f"(e.g. with torch.autograd.set_detect_anomaly) before passing it to {self.name}"
            )

    def validate_point(self, x: Tensor, what: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` has the wrong size; with validation on, also if it is not finite or
        not on the manifold (the message gives the violation and suggests ``projx``)."""
        self._check_size(x, what)
        if self.validate:
            self._check_finite(x, what)
            ok, reason = self._check_point_on_manifold(x)
            if not ok:
                raise ValueError(f"{what}: {reason}")

    def validate_tangent(self, x: Tensor, u: Tensor, what: str = "u") -> None:
        """Like :meth:`validate_point`, for a tangent vector ``u`` at ``x``."""
        self._check_size(u, what)
        if self.validate:
            self._check_finite(u, what)
            ok, reason = self._check_vector_on_tangent(x, u)
            if not ok:
                raise ValueError(f"{what}: {reason}")

    def validate_coords(self, v: Tensor, what: str = "v") -> None:
        """Check tangent coordinates at the origin (``n`` numbers, last dimension)."""
        if v.dim() == 0 or v.size(-1) < 1:
            raise ValueError(f"{what} must have tangent coordinates in its last dimension; got shape {tuple(v.shape)}")
        if self.dim is not None and v.size(-1) != self.dim:
            raise ValueError(
                f"{what} has {v.size(-1)} tangent coordinates, but this {self.name} manifold has dimension {self.dim}"
            )
        if self.validate:
            self._check_finite(v, what)
