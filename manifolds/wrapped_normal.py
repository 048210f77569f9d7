"""The wrapped normal distribution (Nagano et al., ICML 2019) on any manifold of the library."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints

from . import lorentz_math as lm
from .base import ManifoldOps
from .boost import boosted_logmap0
from .constants import INTERNAL_DTYPE

Tensor = torch.Tensor

_LOG_2PI = math.log(2 * math.pi)


class OnManifold(constraints.Constraint):
    """Support constraint: points on ``manifold`` (last dimension = coordinates)."""

    event_dim = 1

    def __init__(self, manifold: ManifoldOps) -> None:
        self.manifold = manifold
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        value = value.detach()
        finite = torch.isfinite(value).all(-1)
        if self.manifold.name != "Lorentz":
            return finite
        v = value.double()
        k = self.manifold.k.detach().double()
        err = (-(v[..., 0] ** 2) + (v[..., 1:] ** 2).sum(-1) + k).abs()
        scale = k + (v * v).sum(-1)
        return finite & (err <= 1e-4 * scale) & (v[..., 0] > 0)


class WrappedNormal(Distribution):
    r"""Wrapped normal ``G(μ, diag σ²)`` on :math:`H^n_k` (or the ordinary normal on ℝⁿ).

    Sampling: ``ṽ ~ N(0, diag σ²)`` in ℝⁿ, ``z = exp_μ(PT_{o→μ}((0, ṽ)))``, computed as ``L_μ(exp_o(ṽ))`` with the
    Lorentz boost ``L_μ`` (:func:`manifolds.lorentz_math.translate`).

    Density (``MATH.md`` §3; no extra ``log R`` term):
    ``log p(z) = log N(ṽ; 0, diag σ²) - (n-1)·ℓ(||ṽ||)``, ``ℓ(r) = log(sqrt(k) sinh(r/sqrt(k)) / r)``, where
    ``ṽ`` are the tangent coordinates of ``PT_{μ→o}(log_μ z) = log_o(L_μ⁻¹ z)``.

    Args:
        loc: the mean ``μ``, a point of ``manifold`` (``n+1`` ambient coordinates on Lorentz, ``n`` on ℝⁿ).
        scale: standard deviations ``σ > 0`` in tangent coordinates at the origin, shape ``(..., n)``.
        manifold: a :class:`~manifolds.Lorentz` or :class:`~manifolds.Euclidean`.
        validate_args: check parameters and the support of ``log_prob``'s argument.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=1.0)
        >>> d = WrappedNormal(M.origin(3), torch.ones(2), M)
        >>> z, log_p = d.rsample_and_log_prob((5,))
        >>> z.shape, torch.allclose(d.log_prob(z), log_p, atol=1e-5)
        (torch.Size([5, 3]), True)
    """

    arg_constraints = {"scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, manifold: ManifoldOps, validate_args: bool | None = None) -> None:
        self.manifold = manifold
        n = manifold.intrinsic_dim(loc) if loc.dim() > 0 else 0
        if loc.dim() == 0 or n < 1:
            raise ValueError(
                f"loc must be a point of {manifold.name} with coordinates in its last dimension; got shape "
                f"{tuple(loc.shape)}"
            )
        if scale.dim() == 0 or scale.size(-1) != n:
            raise ValueError(
                f"scale must have the manifold's intrinsic dimension n={n} in its last dimension (tangent "
                f"coordinates at the origin); got shape {tuple(scale.shape)} for loc of shape {tuple(loc.shape)}"
            )
        self.n = n
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1])
        self.loc = loc.expand(*batch_shape, loc.size(-1))
        self.scale = scale.expand(*batch_shape, n)
        if validate_args:
            manifold.validate_point(self.loc, "loc") if manifold.validate else None
            ok, reason = manifold._check_point_on_manifold(self.loc.detach())
            if not ok:
                raise ValueError(f"loc: {reason}")
        super().__init__(batch_shape, torch.Size([loc.size(-1)]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return OnManifold(self.manifold)

    def expand(self, batch_shape, _instance=None) -> "WrappedNormal":
        batch_shape = torch.Size(batch_shape)
        return WrappedNormal(
            self.loc.expand(*batch_shape, self.loc.size(-1)),
            self.scale.expand(*batch_shape, self.n),
            self.manifold,
            validate_args=False,
        )

    # -- the two halves shared by sampling and scoring -----------------------------------------------------
    def _log_prob_coords(self, v: Tensor) -> Tensor:
        """``log N(v; 0, diag σ²) - (n-1) ℓ(||v||)`` for tangent coordinates ``v`` at the origin."""
        z = v / self.scale
        gauss = -0.5 * (z * z).sum(-1) - self.scale.log().sum(-1) - 0.5 * self.n * _LOG_2PI
        r = torch.linalg.vector_norm(v, dim=-1)
        return gauss - self.manifold.expmap_logdet(r, self.n)

    def _push(self, v: Tensor) -> Tensor:
        return self.manifold.translate(self.loc, self.manifold.expmap0_spatial(v))

    def coords(self, z: Tensor) -> Tensor:
        """Tangent coordinates ``ṽ`` at the origin of a point ``z`` (inverse of the sampling map)."""
        if self._loc_is_fixed_origin(z):
            return self._coords_at_origin(z)
        return self.manifold.logmap0_spatial(self.manifold.translate(self.loc, z, inverse=True))

    def _loc_is_fixed_origin(self, z: Tensor) -> bool:
        """Whether ``L_μ⁻¹`` is the identity on ``z``'s spatial coordinates: a Lorentz ``μ = o`` (zero spatial part,
        no batch shape, no gradient, a dtype that does not promote ``z``'s) and no input validation."""
        loc = self.loc
        return (z.dim() >= 1 and z.size(-1) == loc.size(-1) and torch.promote_types(loc.dtype, z.dtype) == z.dtype
                and self.tangent_at_origin())

    def _coords_at_origin(self, z: Tensor) -> Tensor:
        """``coords`` for ``μ = o``: ``translate(o, z, inverse=True)`` returns ``z``'s spatial coordinates unchanged
        (``ys = p̂ + 0·μ̂-terms`` in float64, cast back exactly) with a recomputed time coordinate, and
        ``logmap0_spatial`` reads the spatial ones only; so this is ``log_o(z)`` from ``z`` itself. An overflow
        (a point beyond the dtype's range) still raises ``ValueError``."""
        out = self.manifold.logmap0_spatial(z)
        if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(z).all()):
            lm.check_finite_result(out, z, what="translate", k=self.manifold.k)
        return out

    # -- tangent coordinates at a fixed origin (used by flows.Flow to skip an exp_o / log_o pair) -------------
    def tangent_at_origin(self) -> bool:
        """Whether this is a wrapped normal at a fixed origin ``μ = o`` of the Lorentz model (no batch shape, no
        gradient, no validation), so that :meth:`log_prob_tangent` and :meth:`rsample_tangent_and_log_prob`
        apply."""
        loc = self.loc
        return (self.manifold.name == "Lorentz" and not getattr(self.manifold, "validate", False)
                and loc.dim() == 1 and not loc.requires_grad and not bool(loc[1:].any()))

    def log_prob_tangent(self, v: Tensor) -> Tensor:
        """``log_prob(exp_o(v))`` from the tangent coordinates ``v`` at the origin (for ``μ = o`` only, see
        :meth:`tangent_at_origin`): ``log N(v; 0, diag σ²) - (n-1)·ℓ(||v||)``."""
        return self._log_prob_coords(v)

    def rsample_tangent_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """The tangent draw ``v ~ N(0, diag σ²)`` of :meth:`rsample_and_log_prob` and its log-density: for ``μ = o``
        the points are ``exp_o(v)`` (in general ``L_μ(exp_o(v))``)."""
        shape = self._extended_shape(sample_shape)[:-1] + (self.n,)
        v = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device) * self.scale
        return v, self._log_prob_coords(v)

    def rsample_logmap0_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        r"""Reparameterised samples ``z`` given by their tangent coordinates at the origin, ``w = log_o(z)``, and
        their log-density ``log p(z)``: the same draw as :meth:`rsample_and_log_prob` (``z = exp_o(w)``).

        On the Lorentz model ``w = log_o(L_μ(exp_o(ṽ)))`` is computed as one fused float64 operation
        (:func:`manifolds.boost.boosted_logmap0`, analytic backward pass) without forming ``z``; for ``μ = o`` it is
        ``ṽ`` itself. For a model whose next step reads tangent coordinates (a tangent-space flow, an
        inner-product decoder) this saves the ``exp_o`` / ``log_o`` pair and its autograd graph. With a fixed ``k``
        the fused operation is once differentiable (no double backward); use :meth:`rsample_and_log_prob` and
        ``logmap0_spatial`` for higher derivatives.

        Example:
            >>> from manifolds import Lorentz
            >>> M = Lorentz(k=2.0)
            >>> q = WrappedNormal(M.expmap0_spatial(torch.randn(5, 2)), torch.rand(5, 2) + 0.1, M)
            >>> _ = torch.manual_seed(0)
            >>> w, lp = q.rsample_logmap0_and_log_prob()
            >>> _ = torch.manual_seed(0)
            >>> z, lp2 = q.rsample_and_log_prob()
            >>> torch.allclose(w, M.logmap0_spatial(z), atol=1e-5) and torch.allclose(lp, lp2)
            True
        """
        v, log_p = self.rsample_tangent_and_log_prob(sample_shape)
        if self.manifold.name != "Lorentz":
            return self.manifold.logmap0_spatial(self._push(v)), log_p
        dtype = torch.promote_types(self.loc.dtype, v.dtype)  # as rsample_and_log_prob's points
        if self.tangent_at_origin():
            return v.to(dtype), log_p
        k = self.manifold.k.to(INTERNAL_DTYPE)
        mu_hat = self.loc[..., 1:].to(INTERNAL_DTYPE).expand(v.shape)
        w, _ = boosted_logmap0(v.to(INTERNAL_DTYPE), mu_hat, k)
        return w.to(dtype), log_p

    # -- Distribution API ----------------------------------------------------------------------------------
    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density, from the same tangent draw (no log map)."""
        v, log_p = self.rsample_tangent_and_log_prob(sample_shape)
        return self._push(v), log_p

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._log_prob_coords(self.coords(value))

    @property
    def mean(self) -> Tensor:
        """The Fréchet mean ``μ`` (the wrapped normal is symmetric about it)."""
        return self.loc

    def entropy(self) -> Tensor:  # pragma: no cover - no closed form on Hⁿ
        raise NotImplementedError("the wrapped normal's entropy has no closed form on the hyperboloid; "
                                  "estimate it with -log_prob(rsample()).mean()")
