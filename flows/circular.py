r"""Flows on the circle S¹ and the torus Tⁿ = (S¹)ⁿ in angle coordinates ``[-π, π)ⁿ`` (Rezende, Papamakarios,
Racanière, Albergo, Kanwar, Shanahan, Cranmer, ICML 2020, "Normalizing flows on tori and spheres", arXiv 2002.02428).

Two bijections of the circle, each composed with a rotation ``θ ↦ θ + c`` and read back in the chart by
:func:`manifolds.torus.wrap`:

* the **circular rational-quadratic spline** (:class:`CircularSplineHalf`): Durkan et al.'s spline with knots
  spanning ``[-π, π]`` and the derivative at ``-π`` equal to the one at ``π`` (``ends="periodic"`` of
  :func:`~flows.splines.rational_quadratic_spline`), so the map is a C¹ bijection of the circle;
* the **Möbius transform** (:class:`MobiusHalf`): ``z ↦ (z - ω)/(1 - ω̄z)`` on ``z = e^{iθ}``, ``|ω| < 1``, with
  ``dθ'/dθ = (1 - |ω|²)/|z - ω|²`` (Rezende et al.'s ``h_ω(z) = (1-|ω|²)/|z-ω|²·(z-ω) - ω`` is the same map on
  the circle) and inverse ``ω ↦ -ω``.

On S¹ (``n = 1``) a layer's parameters are free (:class:`CircleTransform`); on Tⁿ (``n ≥ 2``) layers are couplings
that condition on the other angles through ``(cos θ₁, sin θ₁)`` features, so the parameters are periodic functions
of them (:class:`TorusCoupling`). The flat torus' volume element is ``dθ₁…dθₙ``, so each layer's log-det is the sum
of the log-derivatives of its circle maps. Both are registered for every manifold that declares itself compact and
flat (:func:`on_torus`).

Example:
    >>> import torch
    >>> from manifolds import Torus
    >>> from flows import build
    >>> f = build("circular-spline", Torus(1), 1, layers=4).double()
    >>> x = torch.tensor([[-torch.pi], [0.5]], dtype=torch.float64)
    >>> y, ladj = f(x)
    >>> bool(((y >= -torch.pi) & (y < torch.pi)).all()), torch.allclose(f.inverse(y)[0], x)
    (True, True)
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from manifolds.base import ManifoldOps
from manifolds.torus import wrap

from .conditioners import make_conditioner
from .constants import DEFAULT_HIDDEN, MOBIUS_MAX_RADIUS, OUTPUT_INIT_SCALE, SPLINE_BINS
from .coupling import Coupling
from .halves import CouplingHalf
from .registry import register
from .splines import SplineHalf, rational_quadratic_spline
from .transform import Compose, Transform

Tensor = torch.Tensor

_NOT_TORUS = "On ℝⁿ use 'rqs-coupling', on S² 'sphere-spline'"

__all__ = ["AngleConditioner", "CircleTransform", "CircularSplineHalf", "MobiusHalf", "TorusCoupling", "on_torus"]


def on_torus(manifold: ManifoldOps) -> Optional[str]:
    """Support predicate of the torus flows (:func:`flows.register`): ``None`` for a manifold that declares itself
    compact and flat (the torus Tⁿ in angle coordinates), else why not."""
    if manifold.is_compact and manifold.is_flat:
        return None
    return "it acts on the torus Tⁿ in angle coordinates [-π, π)ⁿ (a compact flat manifold, e.g. Torus(n); S¹ = Torus(1))"


def require(support: Callable[[ManifoldOps], Optional[str]], manifold: ManifoldOps, what: str, instead: str) -> None:
    """A layer's constructor check: ``ValueError`` (why, and ``instead``: what to use) unless ``support(manifold)``
    is ``None``."""
    reason = support(manifold)
    if reason is not None:
        raise ValueError(f"{what} cannot act on the {manifold.name} manifold: {reason}. {instead}")


def check_coords(transform: Transform, x: Tensor, size: int, weight: Optional[Tensor]) -> None:
    """Shape and dtype checks of a compact-manifold layer's input (metadata only: no value is read), and the
    manifold's own checks (e.g. angles inside the chart) when its validation is on."""
    if x.dim() == 0 or x.size(-1) != size:
        raise ValueError(f"{type(transform).__name__} expects {size} coordinates in the last dimension; "
                         f"got shape {tuple(x.shape)}")
    if weight is not None and weight.dtype != x.dtype:
        raise ValueError(f"{type(transform).__name__} got {x.dtype} coordinates but its parameters are {weight.dtype}: "
                         f"convert the input (x.to({weight.dtype})) or the flow (flow.to({x.dtype}))")
    if transform.manifold.validate:
        transform.manifold.validate_point(x, "x")


class CircularSplineHalf(SplineHalf):
    r"""The circular rational-quadratic spline of each angle, then a rotation: ``θ' = wrap(g(θ) + c)`` with ``g``
    the spline on ``[-π, π]`` whose end derivatives are equal (``δ_0 = δ_K``), ``log dθ'/dθ = log g'(θ)``.
    ``3K + 1`` parameters per angle (``3K`` for the spline, the rotation ``c`` last); all zero is the identity.

    ``g(-π) = -π`` and ``g(π) = π``, so ``θ = ±π`` (one point of the circle) map to one point, and the derivative is
    continuous there: a C¹ bijection of the circle. Inputs must be angles in ``[-π, π]``.

    Example:
        >>> half = CircularSplineHalf(bins=4)
        >>> theta = torch.tensor([[-torch.pi], [torch.pi]], dtype=torch.float64)
        >>> params = torch.randn(1, half.n_params, dtype=torch.float64).expand(2, -1)
        >>> y, ladj = half(theta, params)
        >>> torch.allclose(y[0], y[1]), torch.allclose(ladj[0], ladj[1])
        (True, True)
    """

    def __init__(self, bins: int = SPLINE_BINS) -> None:
        super().__init__(bins, bound=math.pi, ends="periodic")
        self.n_params += 1  # the rotation

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        p = self.per_coordinate(w2, params)
        y, logd = rational_quadratic_spline(w2, p[..., :-1], bound=self.bound, ends=self.ends)
        return wrap(y + p[..., -1]), logd.sum(-1)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        p = self.per_coordinate(y2, params)
        x, logd = rational_quadratic_spline(wrap(y2 - p[..., -1]), p[..., :-1], inverse=True, bound=self.bound,
                                            ends=self.ends)
        return x, logd.sum(-1)


class MobiusHalf(CouplingHalf):
    r"""The Möbius transform of each angle, then a rotation: with ``z = e^{iθ}`` and ``|ω| < 1``,
    ``θ' = wrap(arg((z - ω)/(1 - ω̄z)) + c)``, ``log dθ'/dθ = log(1 - |ω|²) - log|z - ω|²``; the inverse is the
    transform with ``-ω`` after the rotation ``-c``. Three parameters per angle ``(u₁, u₂, c)``:
    ``ω = R·u/√(1 + |u|²)`` with ``R`` = :data:`~flows.constants.MOBIUS_MAX_RADIUS`; ``u = 0``, ``c = 0`` is the
    identity.

    On the circle ``(z - ω)(1 - ωz̄) = z - 2ω + ω²z̄``, whose argument is the image's; ``|z - ω|² ≥ (1 - R)²``.

    Example:
        >>> half = MobiusHalf()
        >>> theta = torch.linspace(-3.0, 3.0, 5, dtype=torch.float64).unsqueeze(-1)
        >>> params = torch.tensor([[0.8, -0.3, 1.0]], dtype=torch.float64).expand(5, -1)
        >>> y, ladj = half(theta, params)
        >>> x, ladj_inv = half.inverse(y, params)
        >>> torch.allclose(x, theta), torch.allclose(ladj_inv, -ladj)
        (True, True)
    """

    n_params = 3

    def _circle_map(self, theta: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        p = self.per_coordinate(theta, params)
        u1, u2 = p[..., 0], p[..., 1]
        q = 1 + u1 * u1 + u2 * u2
        scale = sign * MOBIUS_MAX_RADIUS / q.sqrt()
        a, b = scale * u1, scale * u2  # ω (or -ω for the inverse)
        log_one_minus = torch.log1p((1 - MOBIUS_MAX_RADIUS ** 2) * (q - 1)) - torch.log(q)  # log(1 - |ω|²)
        c, s = torch.cos(theta), torch.sin(theta)
        a2b2, ab2 = a * a - b * b, 2 * a * b
        re = c - 2 * a + a2b2 * c + ab2 * s
        im = s - 2 * b + ab2 * c - a2b2 * s
        dist2 = 1 - 2 * (a * c + b * s) + a * a + b * b
        return torch.atan2(im, re), (log_one_minus - torch.log(dist2)).sum(-1)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = self._circle_map(w2, params, 1.0)
        return wrap(y + self.per_coordinate(w2, params)[..., 2]), ladj

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x, ladj = self._circle_map(y2 - self.per_coordinate(y2, params)[..., 2], params, -1.0)
        return wrap(x), ladj


class HarmonicConditioner(nn.Module):
    """A network of ``H`` harmonics of its input, ``x ↦ net(features(x), context)``; subclasses define
    :meth:`features` (:class:`AngleConditioner`, :class:`~flows.sphere.HeightConditioner`)."""

    def __init__(self, net: nn.Module, harmonics: int = 1) -> None:
        super().__init__()
        if int(harmonics) != harmonics or harmonics < 1:
            raise ValueError(f"harmonics must be a positive integer; got {harmonics}")
        self.net = net
        self.harmonics = int(harmonics)

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return self.net(self.features(x), context)


class AngleConditioner(HarmonicConditioner):
    r"""A conditioner of angles: ``θ ↦ net([cos kθ, sin kθ]_{k=1…H}, context)``, so its output is ``2π``-periodic in
    each angle (continuous across ``±π``). ``H = harmonics`` (default 1: ``[cos θ, sin θ]``); more harmonics let a
    small network resolve narrow features in the angle (Fourier features), the net then takes ``2H`` inputs per angle.

    Example:
        >>> from flows.conditioners import MLPConditioner
        >>> net = AngleConditioner(MLPConditioner(2, 3))
        >>> t = torch.tensor([[-torch.pi], [torch.pi]])
        >>> out = net(t)
        >>> torch.allclose(out[0], out[1], atol=1e-6)
        True
        >>> AngleConditioner(MLPConditioner(8, 3), harmonics=4)(t).shape
        torch.Size([2, 3])
    """

    def features(self, theta: Tensor) -> Tensor:
        if self.harmonics == 1:
            return torch.cat([torch.cos(theta), torch.sin(theta)], dim=-1)
        k = torch.arange(1, self.harmonics + 1, dtype=theta.dtype, device=theta.device)
        kt = (theta.unsqueeze(-1) * k).flatten(-2)
        return torch.cat([torch.cos(kt), torch.sin(kt)], dim=-1)


class CircleTransform(Transform):
    r"""One circle map per angle with free parameters (no conditioning): ``θ'ᵢ = h(θᵢ; φᵢ)``,
    ``log|det| = Σᵢ log h'(θᵢ; φᵢ)``; the flow on S¹ (``n = 1``) is a stack of these.

    Args:
        manifold: the torus (anything compact and flat, :func:`on_torus`).
        dim: number of angles ``n``.
        half: the circle map: :class:`CircularSplineHalf` or :class:`MobiusHalf`.

    Example:
        >>> from manifolds import Torus
        >>> f = CircleTransform(Torus(1), 1, MobiusHalf())
        >>> y, ladj = f(torch.rand(6, 1) * 6 - 3)
        >>> y.shape, ladj.shape
        (torch.Size([6, 1]), torch.Size([6]))
    """

    def __init__(self, manifold: ManifoldOps, dim: int, half: CouplingHalf) -> None:
        require(on_torus, manifold, type(self).__name__, _NOT_TORUS)
        super().__init__(manifold)
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim (the number of angles) must be a positive integer; got {dim}")
        self.dim = int(dim)
        self.bijection = half
        # near (not exactly at) the identity, as the conditioners' last layer: every parameter gets a gradient
        self.params = nn.Parameter(torch.randn(half.n_params * self.dim) * OUTPUT_INIT_SCALE)

    def _params(self, x: Tensor) -> Tensor:
        check_coords(self, x, self.dim, self.params)
        return self.params.expand(*x.shape[:-1], self.params.numel())

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self.bijection(x, self._params(x))

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self.bijection.inverse(y, self._params(y))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class TorusCoupling(Transform):
    r"""Coupling on Tⁿ (``n ≥ 2``): ``θ'₁ = θ₁``, ``θ'₂ = h(θ₂; φ(cos θ₁, sin θ₁, c))`` with a circle map ``h`` per
    transformed angle, ``log|det| = Σ log h'``. The skeleton is :class:`~flows.coupling.Coupling` (same halves and
    parities) with an :class:`AngleConditioner`, so the parameters are periodic in the conditioning angles.

    Args:
        manifold: the torus (:func:`on_torus`).
        dim: ``n ≥ 2``.
        half: :class:`CircularSplineHalf` or :class:`MobiusHalf`.
        parity, conditioner, hidden, context_features: as in :class:`~flows.coupling.Coupling`.

    Example:
        >>> from manifolds import Torus
        >>> f = TorusCoupling(Torus(2), 2, CircularSplineHalf(bins=4))
        >>> x = torch.rand(5, 2) * 6 - 3
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(self, manifold: ManifoldOps, dim: int, half: CouplingHalf, parity: int = 0,
                 conditioner: str = "mlp", hidden: int = DEFAULT_HIDDEN, context_features: int = 0) -> None:
        require(on_torus, manifold, type(self).__name__, _NOT_TORUS)
        super().__init__(manifold)
        self.coupling = Coupling(dim, half, parity, conditioner, hidden, context_features)
        n_cond, n_trans = len(self.coupling.cond_idx), len(self.coupling.trans_idx)
        self.coupling.net = AngleConditioner(make_conditioner(conditioner, 2 * n_cond, half.n_params * n_trans,
                                                              hidden, context_features))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_coords(self, x, self.coupling.dim, None)
        return self.coupling(x, context)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_coords(self, y, self.coupling.dim, None)
        return self.coupling.inverse(y, context)


def _torus_flow(manifold: ManifoldOps, dim: int, layers: int, make_half, conditioner: str, hidden: int,
                **kw) -> Transform:
    if manifold.dim is not None and manifold.dim != dim:
        raise ValueError(f"dim={dim} but the torus has dimension {manifold.dim}; pass dim={manifold.dim}")
    if dim == 1:
        if kw.get("context_features"):
            raise ValueError("the circle flows on S¹ (dim=1) have free parameters and take no context; condition a "
                             "flow on Tⁿ with n >= 2 instead")
        return Compose([CircleTransform(manifold, 1, make_half()) for _ in range(layers)])
    return Compose([TorusCoupling(manifold, dim, make_half(), parity=i % 2, conditioner=conditioner, hidden=hidden,
                                  **kw) for i in range(layers)])


@register("circular-spline", on_torus,
          "circular rational-quadratic spline flow on S¹ / coupling on Tⁿ (Rezende et al. 2020)")
def _circular_spline(manifold, dim, layers, hidden, conditioner, bins: int = SPLINE_BINS, **kw) -> Transform:
    """Circular splines: free on S¹ (``dim = 1``), couplings conditioned on ``(cos, sin)`` of the other angles on
    Tⁿ. ``bins``: ``K``."""
    return _torus_flow(manifold, dim, layers, lambda: CircularSplineHalf(bins), conditioner, hidden, **kw)


@register("mobius", on_torus, "Möbius transforms of the circle, on S¹ / as couplings on Tⁿ (Rezende et al. 2020)")
def _mobius(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    """Möbius maps: free on S¹ (``dim = 1``), couplings conditioned on ``(cos, sin)`` of the other angles on Tⁿ."""
    return _torus_flow(manifold, dim, layers, MobiusHalf, conditioner, hidden, **kw)
