"""The wrapped normal distribution (Nagano et al., ICML 2019) on any manifold of the library."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints

from .base import ManifoldOps
from .boost import boosted_logmap0
from .constants import INTERNAL_DTYPE
from .lorentz import Lorentz
from .validation import validation_enabled

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
        if not isinstance(self.manifold, Lorentz):
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

    The wrapped normal at the origin, ``μ = o``, is built by :meth:`at_origin` (the prior of the VAEs, the usual
    base of a flow): then the tangent coordinates of a sample at ``o`` are the Gaussian draw itself, and sampling
    and scoring in them skip the boost. A ``loc`` that merely holds the origin's coordinates is not inspected (that
    would read values on the host): it gets the general boost, exact as well but more work.

    Density (``MATH.md`` §3; no extra ``log R`` term):
    ``log p(z) = log N(ṽ; 0, diag σ²) - (n-1)·ℓ(||ṽ||)``, ``ℓ(r) = log(sqrt(k) sinh(r/sqrt(k)) / r)``, where
    ``ṽ`` are the tangent coordinates of ``PT_{μ→o}(log_μ z) = log_o(L_μ⁻¹ z)``.

    Args:
        loc: the mean ``μ``, a point of ``manifold`` (``n+1`` ambient coordinates on Lorentz, ``n`` on ℝⁿ).
        scale: standard deviations ``σ > 0`` in tangent coordinates at the origin, shape ``(..., n)``.
        manifold: a :class:`~manifolds.Lorentz` or :class:`~manifolds.Euclidean`.
        validate_args: check parameters and the support of ``log_prob``'s argument (reads values on the host);
            ``None`` follows :func:`manifolds.validation.validation_enabled` (off by default).

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

    #: set by :meth:`at_origin`: ``μ = o`` is declared, so tangent coordinates at ``μ`` are those at ``o``
    _at_origin: bool = False

    def __new__(cls, loc: Tensor | None = None, scale: Tensor | None = None, manifold: ManifoldOps | None = None,
                validate_args: bool | None = None):
        """Build the manifold's own wrapped normal where it declares one (``manifold.wrapped_normal_class``: the
        sphere and the torus sum the preimages of ``exp``, the ball goes through the hyperboloid, a product takes
        one per factor); this class otherwise."""
        other = None if manifold is None or cls is not WrappedNormal else manifold.wrapped_normal_class
        if other is not None:
            return other(loc, scale, manifold, validate_args)
        return super().__new__(cls)

    def __init__(self, loc: Tensor, scale: Tensor, manifold: ManifoldOps, validate_args: bool | None = None) -> None:
        if validate_args is None:  # the library's switch (manifolds.validation), not torch.distributions' default
            validate_args = validation_enabled()
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
        """Points of the manifold (:class:`OnManifold`)."""
        return OnManifold(self.manifold)

    def expand(self, batch_shape, _instance=None) -> "WrappedNormal":
        """The same wrapped normal with ``loc`` and ``scale`` expanded to ``batch_shape`` (no copy)."""
        batch_shape = torch.Size(batch_shape)
        out = WrappedNormal(
            self.loc.expand(*batch_shape, self.loc.size(-1)),
            self.scale.expand(*batch_shape, self.n),
            self.manifold,
            validate_args=False,
        )
        out._at_origin = self._at_origin
        return out

    @classmethod
    def at_origin(cls, scale: Tensor, manifold: ManifoldOps, validate_args: bool | None = None) -> "WrappedNormal":
        r"""``G(o, diag σ²)``: the wrapped normal at the origin ``o = exp_o(0)`` (differentiable in a learnable
        curvature), declared as such, so that sampling and scoring in tangent coordinates
        (:meth:`rsample_logmap0_and_log_prob`, :meth:`log_prob_logmap0`) skip the boost ``L_μ``.

        Example:
            >>> from manifolds import Lorentz
            >>> p = WrappedNormal.at_origin(torch.ones(2), Lorentz())
            >>> w, log_p = p.rsample_logmap0_and_log_prob((3,))
            >>> torch.allclose(p.log_prob_logmap0(w), log_p)
            True
        """
        zeros = torch.zeros(scale.shape[-1:], dtype=scale.dtype, device=scale.device)
        out = cls(manifold.expmap0_spatial(zeros), scale, manifold, validate_args)
        out._at_origin = True
        return out

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
        if self._at_origin:  # L_o is the identity
            return self.manifold.logmap0_spatial(z)
        return self.manifold.logmap0_spatial(self.manifold.translate(self.loc, z, inverse=True))

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """The Gaussian draw ``ṽ ~ N(0, diag σ²)`` (tangent coordinates at ``o`` before the boost) and ``log p``."""
        shape = self._extended_shape(sample_shape)[:-1] + (self.n,)
        v = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device) * self.scale
        return v, self._log_prob_coords(v)

    def log_prob_logmap0(self, w: Tensor) -> Tensor:
        r"""``log_prob(exp_o(w))`` from the tangent coordinates ``w`` at the origin: for ``μ = o``
        (:meth:`at_origin`) ``log N(w; 0, diag σ²) - (n-1)·ℓ(||w||)`` directly; otherwise ``ṽ = log_o(L_μ⁻¹(exp_o
        w))`` as one fused float64 operation (:func:`manifolds.boost.boosted_logmap0`), without forming points.

        Example:
            >>> from manifolds import Lorentz
            >>> M = Lorentz(k=2.0)
            >>> q = WrappedNormal(M.expmap0_spatial(torch.tensor([1.0, -2.0])), torch.tensor([0.5, 1.5]), M)
            >>> w = torch.randn(4, 2)
            >>> torch.allclose(q.log_prob_logmap0(w), q.log_prob(M.expmap0_spatial(w)), atol=1e-5)
            True
        """
        if self._at_origin:
            return self._log_prob_coords(w)
        if not isinstance(self.manifold, Lorentz):
            return self.log_prob(self.manifold.expmap0_spatial(w))
        dtype = torch.promote_types(self.loc.dtype, w.dtype)
        k = self.manifold.k.to(INTERNAL_DTYPE)
        mu_hat = self.loc[..., 1:].to(INTERNAL_DTYPE).expand(w.shape)
        v, _ = boosted_logmap0(w.to(INTERNAL_DTYPE), mu_hat, k, inverse=True)
        return self._log_prob_coords(v.to(dtype))

    def rsample_logmap0_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        r"""Reparameterised samples ``z`` given by their tangent coordinates at the origin, ``w = log_o(z)``, and
        their log-density ``log p(z)``: the same draw as :meth:`rsample_and_log_prob` (``z = exp_o(w)``).

        On the Lorentz model ``w = log_o(L_μ(exp_o(ṽ)))`` is computed as one fused float64 operation
        (:func:`manifolds.boost.boosted_logmap0`, analytic backward pass) without forming ``z``; for ``μ = o`` it is
        ``ṽ`` itself (declared by :meth:`at_origin`). For a model whose next step reads tangent coordinates (a tangent-space flow, an
        inner-product decoder) this saves the ``exp_o`` / ``log_o`` pair and its autograd graph. With a fixed ``k``
        the fused operation is once differentiable (no double backward); use :meth:`rsample_and_log_prob` and
        ``logmap0_spatial`` for higher derivatives. :meth:`log_prob_logmap0` scores such coordinates.

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
        v, log_p = self._draw(torch.Size(sample_shape))
        dtype = torch.promote_types(self.loc.dtype, v.dtype)  # as rsample_and_log_prob's points
        if self._at_origin:
            return v.to(dtype), log_p
        if not isinstance(self.manifold, Lorentz):
            return self.manifold.logmap0_spatial(self._push(v)), log_p
        k = self.manifold.k.to(INTERNAL_DTYPE)
        mu_hat = self.loc[..., 1:].to(INTERNAL_DTYPE).expand(v.shape)
        w, _ = boosted_logmap0(v.to(INTERNAL_DTYPE), mu_hat, k)
        return w.to(dtype), log_p

    # -- Distribution API ----------------------------------------------------------------------------------
    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Reparameterised samples ``z = L_μ(exp_o(ṽ))``, ``ṽ ~ N(0, diag σ²)``, of shape ``sample_shape +
        batch_shape + (n+1,)``."""
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Samples as :meth:`rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density, from the same tangent draw (no log map)."""
        v, log_p = self._draw(torch.Size(sample_shape))
        return self._push(v), log_p

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(z) = log N(ṽ; 0, diag σ²) - (n-1)·ℓ(‖ṽ‖)`` with ``ṽ`` the tangent coordinates of ``log_o(L_μ⁻¹
        z)`` (``MATH.md`` §3)."""
        if self._validate_args:
            self._validate_sample(value)
        return self._log_prob_coords(self.coords(value))

    @property
    def mean(self) -> Tensor:
        """The Fréchet mean ``μ`` (the wrapped normal is symmetric about it)."""
        return self.loc

    @property
    def mode(self) -> Tensor:
        """The point of highest density, ``μ`` (what a model reports as a posterior's embedding)."""
        return self.loc

    def entropy(self) -> Tensor:  # pragma: no cover - no closed form on Hⁿ
        """Not available: the wrapped normal's entropy has no closed form on Hⁿ (estimate it by Monte Carlo,
        ``-log_prob(sample)``)."""
        raise NotImplementedError("the wrapped normal's entropy has no closed form on the hyperboloid; "
                                  "estimate it with -log_prob(rsample()).mean()")
