r"""Riemannian continuous flows on the hyperboloid Hⁿ_k, trained by flow matching, with exact likelihoods.

A time-dependent vector field ``V_θ(t, x)`` on the manifold itself (ambient coordinates, tangent at ``x``) defines
the flow ``dx/dt = V_θ(t, x)``, ``x(0) = x₀`` (base) ``→ x(1)`` (data): :class:`RiemannianFlow` (``flows.build("rfm",
Lorentz(k), n)``). It is trained without simulating the ODE by Riemannian flow matching (Chen & Lipman, ICLR 2024,
arXiv 2302.03660; :func:`flow_matching_loss`) and scored exactly by integrating the Riemannian divergence, as
manifold CNFs do (Mathieu & Nickel 2020, arXiv 2006.10605; Lou et al. 2020, arXiv 2006.10254):

.. math:: \log p_1(x(1)) = \log p_0(x(0)) - \int_0^1 \operatorname{div}_g V_t(x(t))\,dt .

**The divergence of a tangent field given in ambient coordinates.** Let ``G = diag(-1, 1, …, 1)`` (the Minkowski
metric ``⟨a, b⟩_L = aᵀGb``), ``V`` a smooth map from a neighbourhood of Hⁿ_k in ℝⁿ⁺¹ to ℝⁿ⁺¹ that is tangent on
Hⁿ_k (``⟨x, V(x)⟩_L = 0``), and ``J = ∂V/∂x`` its ambient Jacobian. Hⁿ_k is a spacelike hypersurface of
Minkowski space, whose Levi-Civita connection is the ordinary derivative, so the Levi-Civita connection of Hⁿ_k
is the projected one, ``∇_e V = P_x(J e)`` (Gauss formula), with ``P_x`` the Minkowski-orthogonal projection onto
``T_xH``. For an orthonormal basis ``e_1 … e_n`` of ``T_xH`` (``⟨e_i, e_j⟩_L = δ_ij``),

.. math:: \operatorname{div}_g V = \sum_i ⟨e_i, ∇_{e_i} V⟩_L = \sum_i ⟨e_i, J e_i⟩_L ,

since ``e_i`` is tangent and ``P_x`` is orthogonal. Complete the basis with the unit normal ``ν = x/√k``
(``⟨ν, ν⟩_L = -1``). The trace of the linear map ``J`` in any basis orthonormal for ``⟨·,·⟩_L`` is
``tr J = Σ_A ε_A ⟨E_A, J E_A⟩_L`` (``ε_A = ⟨E_A, E_A⟩_L = ±1``), so ``tr J = Σ_i ⟨e_i, J e_i⟩_L - ⟨ν, Jν⟩_L`` and

.. math:: \operatorname{div}_g V(x) = \operatorname{tr} J(x) + \frac{⟨x, J(x)\,x⟩_L}{k} .

The normal derivative ``Jν``, which depends on how ``V`` is extended off the manifold, cancels between the two
terms: the formula holds for every extension. :func:`riemannian_divergence` evaluates it exactly with ``n + 2``
vector-Jacobian products (rows ``e_A`` for ``tr J``, and ``Gx``), or estimates ``Σ_i ⟨e_i, J e_i⟩_L`` by
Hutchinson's ``⟨ε, Jε⟩_L = (Gε)ᵀJε`` with ``ε`` standard normal in ``T_xH`` (``ε = PT_{o→x}(0, z)``,
``z ~ N(0, I_n)``; ``E[⟨ε, Jε⟩_L] = Σ_i ⟨e_i, J e_i⟩_L``) and one product. ``tests/flows/test_rfm.py`` checks it
against the chart computation ``div_g V = div_u w + w · ∇_u log ρ`` in tangent coordinates ``u`` at the origin
(``w`` the field in the chart, ``ρ(u) = (sinh(|u|/√k)/(|u|/√k))^{n-1}`` the volume density of ``exp_o``: the ℓ
terms of the lifted flows).

**Integration.** The ODE is solved in the global chart ``u = log_o(x)`` (a diffeomorphism Hⁿ_k → ℝⁿ) with a
``torchdiffeq`` solver (dopri5 by default): ``du/dt = D log_o(x)[V(t, x)]`` at ``x = exp_o(u)``, with the
closed form ``D log_o(x)[V] = a(s)·V̂ + b(s)·(x̂·V̂)·x̂`` (``x̂, V̂`` the spatial parts, ``s = |x̂|/√k``,
``a = asinh(s)/s``, ``b = (s/√(1+s²) - asinh s)/(k s³)``). Every state is mapped to the manifold by ``exp_o``, so
the trajectory lies on Hⁿ_k to rounding (no retraction, nothing to bound), and the log-density integrand is the
Riemannian divergence above, evaluated at that point. The error is the solver's (its tolerances), stated by
``inverse_tolerance`` / ``logdet_tolerance`` as for :class:`~flows.ContinuousFlow`.

**The field.** ``V_θ(t, x) = P_x(PT_{o→x}(0, z_θ(t, log_o x)))``: an MLP of the tangent coordinates and time gives
``z_θ ∈ ℝⁿ`` in the frame parallel-transported from the origin, and the projection ``P_x(v) = v + ⟨x, v⟩_L x/k``
makes tangency exact to rounding. (Projecting a raw ambient output instead would give tangent vectors of
Riemannian size up to ~cosh(d(o, x)) for an O(1) output, a stiff ODE far from the origin; the transported frame
keeps ``|V|_g = |z_θ|``.)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from manifolds import lorentz_math as lm
from manifolds.base import ManifoldOps

from .constants import (CNF_ATOL, CNF_INVERSE_TOLERANCE_FACTOR, CNF_LOGDET_TOLERANCE_FACTOR, CNF_METHOD,
                        CNF_MIN_TOLERANCE, CNF_RTOL, DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, FM_COUPLINGS,
                        FM_OT_BLOCK, OUTPUT_INIT_SCALE, RFM_ACTIVATION, RFM_ACTIVATIONS, RFM_CHART_SERIES_THRESHOLD)
from .continuous import TRACES, exact_trace, hutchinson_trace
from .extras import require
from .registry import register
from .transform import TangentNativeTransform, Transform

Tensor = torch.Tensor

TIME_SCHEDULES = ("uniform", "logit-normal")


def minkowski_dual(v: Tensor) -> Tensor:
    """``G v`` (the time coordinate negated): ``⟨a, b⟩_L = (G a)ᵀ b``."""
    return torch.cat([-v[..., :1], v[..., 1:]], dim=-1)


#: the field's activations by name (their names and the default: :data:`~flows.constants.RFM_ACTIVATIONS`)
_ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}
assert set(_ACTIVATION_FUNCTIONS) == set(RFM_ACTIVATIONS)


class LorentzVectorField(nn.Module):
    r"""A time-dependent tangent vector field ``V_θ(t, x)`` on Hⁿ_k in ambient coordinates (see the module):
    ``V = P_x(PT_{o→x}(0, z_θ(t, log_o x)))``, ``z_θ`` an MLP of ``[log_o x, t]`` whose last layer starts small (a
    flow near the identity that trains every parameter). Its activation is SiLU (default: ``|z_θ|`` grows at most
    linearly in ``|log_o x|``, and the chart velocity's radial part is the frame's, so no trajectory escapes to
    infinity in finite time) or tanh (bounded speed); :data:`~flows.constants.RFM_ACTIVATION` says why SiLU.

    Args:
        manifold: a :class:`~manifolds.Lorentz`.
        dim: intrinsic dimension ``n``.
        hidden: width of the MLP.
        layers: number of hidden layers (``≥ 1``).
        activation: ``"silu"`` or ``"tanh"`` (:data:`~flows.constants.RFM_ACTIVATIONS`).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=2.0)
        >>> V = LorentzVectorField(M, 2, hidden=8)
        >>> x = M.expmap0_spatial(torch.randn(4, 2))
        >>> v = V(torch.tensor(0.3), x)
        >>> bool((M.inner(x, x, v).abs() < 1e-5).all())  # tangent at x
        True
    """

    def __init__(self, manifold: ManifoldOps, dim: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, activation: str = RFM_ACTIVATION) -> None:
        super().__init__()
        if activation not in RFM_ACTIVATIONS:
            raise ValueError(f"activation must be one of {RFM_ACTIVATIONS}; got {activation!r}")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim}")
        if int(layers) != layers or layers < 1:
            raise ValueError(f"layers (hidden layers of the vector field) must be a positive integer; got {layers}")
        if not hasattr(manifold, "k"):
            raise ValueError("LorentzVectorField needs a Lorentz manifold (it uses its curvature k)")
        self.manifold = manifold
        self.dim = int(dim)
        self.activation = activation
        self._act = _ACTIVATION_FUNCTIONS[activation]
        sizes = [self.dim + 1] + [int(hidden)] * int(layers)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], self.dim)
        with torch.no_grad():
            self.out.weight.mul_(OUTPUT_INIT_SCALE)
            self.out.bias.zero_()

    def frame_coordinates(self, t: Tensor, u: Tensor) -> Tensor:
        """``z_θ(t, u)``: the field's coordinates in the frame transported from the origin, at ``x = exp_o(u)``."""
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device).expand(u.shape[:-1]).unsqueeze(-1)
        h = torch.cat([u, t], dim=-1)
        for layer in self.hidden:
            h = self._act(layer(h))
        return self.out(h)

    def chart(self, t: Tensor, u: Tensor) -> Tensor:
        r"""The same field in the chart ``u = log_o x``: ``w = D log_o(x)[V(t, x)]`` computed from ``u`` alone.

        Parallel transport along the radial geodesic takes the radial unit vector ``û`` to the geodesic's unit
        velocity and keeps perpendicular vectors perpendicular and unit; in the chart, radial geodesics are
        straight lines at unit speed and ``d exp_o`` stretches perpendicular directions by
        ``σ(|u|) = sinh(|u|/√k)/(|u|/√k)``. So ``w = (z·û)û + z_⊥/σ = z/σ + c·(z·u)u`` with ``c = (1 - 1/σ)/|u|²``
        (series near 0). No ambient coordinate is formed: far from the origin, where ambient coordinates of size
        ``cosh(d)`` lose ``ε·cosh²(d)`` to rounding, this stays exact to working precision.
        """
        z = self.frame_coordinates(t, u)
        k = self.manifold.k.to(u.dtype)
        r2 = (u * u).sum(-1, keepdim=True)
        small = r2 < RFM_CHART_SERIES_THRESHOLD ** 2 * k
        r2s = torch.where(small, torch.ones_like(r2), r2)  # masked: no sqrt'(0) = inf in the unused branch's gradient
        q = torch.sqrt(r2s / k)
        q2 = torch.where(small, r2, torch.zeros_like(r2)) / k
        sigma_series = 1 + q2 / 6 * (1 + q2 / 20 * (1 + q2 / 42))
        sigma = torch.where(small, sigma_series, torch.sinh(q) / q)
        c = torch.where(small, (1 + q2 / 20) / (6 * k * sigma_series), (1 - 1 / sigma) / r2s)
        return z / sigma + c * (z * u).sum(-1, keepdim=True) * u

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``V_θ(t, x) ∈ T_xH`` (ambient, ``n + 1`` coordinates) for points ``x`` (ambient)."""
        k = self.manifold.k.to(x.dtype)
        z = self.frame_coordinates(t, lm.logmap0_spatial(x, k))
        v = lm.transp0(x, torch.cat([torch.zeros_like(z[..., :1]), z], dim=-1), k)
        return v + lm.inner(x, v, keepdim=True) * x / k  # P_x: tangency exact to rounding


def riemannian_divergence(v: Tensor, x: Tensor, k: Tensor, *, noise: Optional[Tensor] = None,
                          create_graph: bool = False) -> Tensor:
    r"""``div_g V(x) = tr J + ⟨x, Jx⟩_L / k`` of a tangent field ``v = V(x)`` on Hⁿ_k (ambient, ``J = ∂v/∂x``; see
    the module for the derivation), exactly (``noise=None``: ``n + 2`` vector-Jacobian products, batched), or
    Hutchinson's unbiased estimate ``⟨ε, Jε⟩_L`` for a probe ``ε ∈ T_xH`` with ``E[εε^♭] = P_x`` (one product).
    Rows of ``v`` must depend on the same rows of ``x`` only. ``x`` must be part of ``v``'s autograd graph.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz()
        >>> x = M.expmap0_spatial(torch.tensor([[0.3, -0.2]], dtype=torch.float64)).requires_grad_(True)
        >>> # the field x ↦ P_x(a) of a constant ambient a: its divergence is n·⟨x, a⟩_L / k
        >>> a = torch.tensor([0.5, 1.0, -2.0], dtype=torch.float64)
        >>> v = a + M.inner(x, x, a.expand_as(x), keepdim=True) * x
        >>> d = riemannian_divergence(v, x, M.k.double())
        >>> torch.allclose(d, 2 * M.inner(x, x, a.expand_as(x)).detach())
        True
    """
    k = k.to(x.dtype)
    if noise is not None:
        (g,) = torch.autograd.grad(v, x, minkowski_dual(noise), create_graph=create_graph, retain_graph=True,
                                   allow_unused=True)
        return v.new_zeros(v.shape[:-1]) if g is None else (g * noise).sum(-1)
    m = v.size(-1)
    rows = torch.eye(m, dtype=v.dtype, device=v.device).reshape(m, *([1] * (v.dim() - 1)), m).expand(m, *v.shape)
    rows = torch.cat([rows, minkowski_dual(x.detach()).unsqueeze(0)], dim=0)  # e_A (A < m), then G x
    (g,) = torch.autograd.grad(v, x, rows, create_graph=create_graph, retain_graph=True, allow_unused=True,
                               is_grads_batched=True)
    if g is None:
        return v.new_zeros(v.shape[:-1])
    trace = torch.diagonal(g[:m], dim1=0, dim2=-1).sum(-1)  # Σ_A (e_Aᵀ J)_A
    normal = (g[m] * x.detach()).sum(-1)  # (G x)ᵀ J x = ⟨x, J x⟩_L
    return trace + normal / k


def chart_velocity(x: Tensor, v: Tensor, k: Tensor) -> Tensor:
    r"""``D log_o(x)[v]``: the velocity in tangent coordinates at the origin of a tangent vector ``v`` at ``x``,
    ``a(s)·v̂ + b(s)·(x̂·v̂)·x̂`` (see the module; series below ``s = RFM_CHART_SERIES_THRESHOLD``).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=0.5)
        >>> u = torch.tensor([[0.7, -1.1]], dtype=torch.float64)
        >>> w = torch.tensor([[0.2, 0.3]], dtype=torch.float64)  # a chart velocity at u
        >>> x = M.expmap0_spatial(u)
        >>> v = torch.autograd.functional.jvp(M.expmap0_spatial, u, w)[1]  # the same motion on the manifold
        >>> torch.allclose(chart_velocity(x, v, M.k.double()), w)
        True
    """
    k = k.to(x.dtype)
    xs, vs = x[..., 1:], v[..., 1:]
    r = torch.linalg.vector_norm(xs, dim=-1, keepdim=True)
    s = r / k.sqrt()
    small = s < RFM_CHART_SERIES_THRESHOLD
    s_safe = torch.where(small, torch.ones_like(s), s)
    s2 = torch.where(small, s, torch.zeros_like(s)) ** 2
    a = torch.where(small, 1 - s2 / 6 + 3 * s2 * s2 / 40, torch.asinh(s_safe) / s_safe)
    b = torch.where(small, -1 / 3 + 3 * s2 / 10 - 15 * s2 * s2 / 56,
                    (s_safe / torch.sqrt(1 + s_safe * s_safe) - torch.asinh(s_safe)) / s_safe ** 3) / k
    return a * vs + b * (xs * vs).sum(-1, keepdim=True) * xs


def _log_volume_gradient_coefficient(r: Tensor, k: Tensor) -> Tensor:
    r"""``g(r) = d/dr log sinhc(r/√k) = (coth(q) - 1/q)/√k``, ``q = r/√k`` (series ``q/3 - q³/45 + 2q⁵/945``
    near 0): ``∇_u log ρ(u) = (n - 1)·g(|u|)·û``."""
    q = r / k.sqrt()
    small = q < RFM_CHART_SERIES_THRESHOLD
    qs = torch.where(small, torch.ones_like(q), q)
    q2 = torch.where(small, q, torch.zeros_like(q)) ** 2
    series = q * (1 / 3 - q2 / 45 + 2 * q2 * q2 / 945)
    return torch.where(small, series, 1 / torch.tanh(qs) - 1 / qs) / k.sqrt()


class _ChartDynamics:
    """``d(u, ℓ)/dt = (w, div_g V)`` at ``x = exp_o u``; one object per solve (fixed Hutchinson probes).

    With a field that has ``chart(t, u)`` (the default :class:`LorentzVectorField`), everything is computed in the
    chart: ``div_g V = div_u w + w·∇_u log ρ`` (exact: ``n`` vector-Jacobian products; Hutchinson: one, probes
    ``N(0, I_n)``). Otherwise the field is evaluated at ambient points, ``w = D log_o(x)[V]``
    (:func:`chart_velocity`) and ``div_g V`` by :func:`riemannian_divergence` (``n + 2`` products, probes
    transported to ``T_xH``); the two agree (tested), the chart form stays accurate far from the origin."""

    def __init__(self, field: nn.Module, k: Tensor, probes: Optional[Tensor]) -> None:
        self.field, self.k, self.probes = field, k, probes
        self.in_chart = hasattr(field, "chart")
        self.evaluations = 0

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        u = state[0]
        self.evaluations += 1
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            if not u.requires_grad:
                u = u.detach().requires_grad_(True)
            if self.in_chart:
                du = self.field.chart(t, u)
                if self.probes is None:
                    div = exact_trace(du, u, create_graph=differentiable)
                else:
                    div = hutchinson_trace(du, u, self.probes, create_graph=differentiable)
                r2 = (u * u).sum(-1)
                r = torch.sqrt(torch.where(r2 > 0, r2, torch.ones_like(r2)))  # masked at u = 0 (finite gradients)
                radial = torch.where(r2 > 0, (du * u).sum(-1) / r, torch.zeros_like(r))  # w·û, 0 at u = 0
                g = _log_volume_gradient_coefficient(torch.where(r2 > 0, r, torch.zeros_like(r)), self.k)
                div = div + (u.size(-1) - 1) * g * radial
            else:
                x = lm.expmap0_spatial(u, self.k)
                v = self.field(t, x)
                noise = None
                if self.probes is not None:  # standard normal in T_xH: the probe transported from the origin
                    zero = torch.zeros_like(self.probes[..., :1])
                    noise = lm.transp0(x.detach(), torch.cat([zero, self.probes], -1), self.k)
                div = riemannian_divergence(v, x, self.k, noise=noise, create_graph=differentiable)
                du = chart_velocity(x, v, self.k)
        if not differentiable:
            du, div = du.detach(), div.detach()
        return du, div


class RiemannianFlow(TangentNativeTransform):
    r"""The flow ``x(0) ↦ x(1)`` of ``dx/dt = V_θ(t, x)`` on Hⁿ_k (``forward`` = base → data), with the Riemannian
    log-det ``log|det| = ∫₀¹ div_g V_t(x(t)) dt`` (exact trace or Hutchinson); ``inverse`` integrates from 1 to 0.
    See the module for the divergence formula and the integration in the chart ``log_o``. It is defined in
    tangent coordinates at the origin (a :class:`~flows.transform.TangentNativeTransform`), so
    :class:`~flows.Flow` and the VAEs call it there.

    Train it by :func:`flow_matching_loss` (no ODE solve), or by maximum likelihood through the solver like any flow.

    Args:
        manifold: a :class:`~manifolds.Lorentz`.
        dim: intrinsic dimension ``n``.
        hidden, layers, activation: width, depth and activation of the default :class:`LorentzVectorField`.
        field: a field module ``V(t, x)`` (ambient points → ambient tangent vectors) replacing the default.
        trace: ``"exact"`` (``n + 2`` vector-Jacobian products per evaluation) or ``"hutchinson"`` (one; unbiased
            log-densities, any ``n``).
        method, rtol, atol: the ``torchdiffeq`` solver and its tolerances (floored per dtype at
            :data:`~flows.constants.CNF_MIN_TOLERANCE`).

    Example:
        >>> from manifolds import Lorentz, WrappedNormal
        >>> from flows import Flow
        >>> M = Lorentz()
        >>> f = RiemannianFlow(M, 2, hidden=16).double()
        >>> x = M.expmap0_spatial(torch.randn(5, 2, dtype=torch.float64))
        >>> y, ladj = f(x)
        >>> x_back, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-7)), bool(torch.allclose(ladj_inv, -ladj, atol=1e-7))
        (True, True)
    """

    def __init__(self, manifold: ManifoldOps, dim: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, *, field: Optional[nn.Module] = None, trace: str = "exact",
                 method: str = CNF_METHOD, rtol: float = CNF_RTOL, atol: float = CNF_ATOL,
                 activation: str = RFM_ACTIVATION) -> None:
        if not hasattr(manifold, "k"):
            raise ValueError("the Riemannian flow acts on a Lorentz manifold (it uses its curvature k)")
        super().__init__(manifold)
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}; got {trace!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive; got rtol={rtol}, atol={atol}")
        self.dim = int(dim)
        self.field = field if field is not None else LorentzVectorField(manifold, dim, hidden, layers, activation)
        self.trace, self.method, self.rtol, self.atol = trace, method, float(rtol), float(atol)
        #: vector-field evaluations of the last solve (the solver's cost)
        self.last_evaluations = 0

    @property
    def inverse_tolerance(self) -> float:  # type: ignore[override]
        """Stated max abs error of round trips in tangent coordinates, ``CNF_INVERSE_TOLERANCE_FACTOR·max(rtol,
        atol)`` (float64; fields of O(1) speed over unit time)."""
        return CNF_INVERSE_TOLERANCE_FACTOR * max(self.rtol, self.atol)

    @property
    def logdet_tolerance(self) -> float:
        """Stated max abs error of the log-dets (exact trace), ``CNF_LOGDET_TOLERANCE_FACTOR · max(rtol, atol)``."""
        return CNF_LOGDET_TOLERANCE_FACTOR * max(self.rtol, self.atol)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, trace={self.trace!r}, method={self.method!r}, rtol={self.rtol:g}, atol={self.atol:g}"

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(w, reverse=False)

    def inverse_tangent(self, v: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(v, reverse=True)

    def _solve(self, u: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        odeint = require("torchdiffeq", "RiemannianFlow's log-density and sampling (flows.build('rfm'))").odeint

        if u.dim() == 0 or u.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} tangent coordinates in the last dimension; "
                             f"got shape {tuple(u.shape)}")
        batch = u.shape[:-1]
        u0 = u.reshape(-1, self.dim)
        probes = torch.randn_like(u0) if self.trace == "hutchinson" else None
        k = self.manifold.k.to(u0.dtype)
        dynamics = _ChartDynamics(self.field, k, probes)
        times = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=u0.dtype, device=u0.device)
        floor = CNF_MIN_TOLERANCE.get(str(u0.dtype).removeprefix("torch."), CNF_MIN_TOLERANCE["float32"])
        us, ls = odeint(dynamics, (u0, u0.new_zeros(u0.shape[0])), times, rtol=max(self.rtol, floor),
                        atol=max(self.atol, floor), method=self.method)
        self.last_evaluations = dynamics.evaluations
        return us[-1].reshape(*batch, self.dim), ls[-1].reshape(batch)


def sample_times(shape: torch.Size, schedule: str, *, dtype: torch.dtype, device: torch.device,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """Times ``t ∈ [0, 1)`` for flow matching: ``"uniform"``, or ``"logit-normal"`` (``σ(N(0, 1))``,
    more weight mid-path, as in Esser et al. 2024)."""
    if schedule == "uniform":
        t = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    elif schedule == "logit-normal":
        t = torch.sigmoid(torch.randn(shape, dtype=dtype, device=device, generator=generator))
    else:
        raise ValueError(f"time schedule must be one of {TIME_SCHEDULES}; got {schedule!r}")
    return t


def geodesic_sq_distances(x: Tensor, y: Tensor, k: Tensor | float) -> Tensor:
    r"""All squared geodesic distances ``C_ij = d(x_i, y_j)² = k·arccosh²(-⟨x_i, y_j⟩_L / k)`` of ``x``
    ``(..., B, n+1)`` and ``y`` ``(..., B', n+1)`` on Hⁿ_k, as ``(..., B, B')`` float64 (one matrix product; the
    arccosh form loses digits for nearly equal points, which a transport cost can afford and
    :func:`manifolds.lorentz_math.dist` does not).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=2.0)
        >>> x, y = M.expmap0_spatial(torch.randn(3, 2)), M.expmap0_spatial(torch.randn(4, 2))
        >>> torch.allclose(geodesic_sq_distances(x, y, 2.0), M.dist(x[:, None], y[None]).double() ** 2, atol=1e-5)
        True
    """
    k = torch.as_tensor(k, dtype=torch.float64, device=x.device)
    x, y = x.double(), y.double()
    minus_inner = x[..., :1] * y[..., :1].transpose(-1, -2) - x[..., 1:] @ y[..., 1:].transpose(-1, -2)
    return k * torch.acosh((minus_inner / k).clamp_min(1.0)) ** 2


def ot_pairing(x0: Tensor, x1: Tensor, k: Tensor | float, block: int = FM_OT_BLOCK) -> Tensor:
    r"""Minibatch optimal transport: the permutation ``π`` of ``x0``'s rows (``(B, n+1)``) that minimises
    ``Σ_i d(x0_{π(i)}, x1_i)²`` within each run of ``block`` consecutive rows (the last one may be shorter): an exact
    assignment per block (Hungarian, ``scipy.optimize.linear_sum_assignment``), pairing ``x0[π]`` with ``x1``.

    A permutation keeps both samples as they are, so pairs ``(x0[π(i)], x1[i])`` are a coupling with the base and the
    data as marginals (Tong et al. 2023; Pooladian et al. 2023): flow matching on them still carries the base to the
    data, along straighter, less crossing paths. The assignment runs on the CPU: one device → host copy of the costs
    per call (on a GPU, a synchronisation; the rest of a flow-matching step makes none).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz()
        >>> x1 = M.expmap0_spatial(torch.tensor([[3.0, 0.0], [-3.0, 0.0]]))
        >>> x0 = M.expmap0_spatial(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        >>> ot_pairing(x0, x1, 1.0).tolist()
        [1, 0]
    """
    from scipy.optimize import linear_sum_assignment

    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"the OT block must be a positive int (points per assignment); got {block!r}")
    if x0.dim() != 2 or x0.shape != x1.shape:
        raise ValueError(f"ot_pairing pairs two (B, n+1) batches of the same shape; got {tuple(x0.shape)} and "
                         f"{tuple(x1.shape)}")
    B, D = x0.shape
    full = B - B % block
    blocks = []  # (first row, costs)
    if full:
        c = geodesic_sq_distances(x0[:full].reshape(-1, block, D), x1[:full].reshape(-1, block, D), k).cpu().numpy()
        blocks += [(i * block, c[i]) for i in range(len(c))]
    if full < B:
        blocks.append((full, geodesic_sq_distances(x0[full:], x1[full:], k).cpu().numpy()))
    perm = torch.empty(B, dtype=torch.long)
    for start, cost in blocks:
        rows, cols = linear_sum_assignment(cost)
        perm[start + torch.as_tensor(cols)] = start + torch.as_tensor(rows)
    return perm.to(x0.device)


def flow_matching_loss(field: Callable[[Tensor, Tensor], Tensor] | RiemannianFlow, x1: Tensor, base,
                       *, schedule: str = "uniform", coupling: str = "independent", ot_block: int = FM_OT_BLOCK,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Riemannian flow matching (Chen & Lipman 2024) on Hⁿ_k with geodesic conditional paths:

    ``x₀ ~ base``, ``t ~ schedule``, ``x_t = exp_{x₀}(t·log_{x₀}(x₁))`` and the target velocity
    ``u_t = log_{x_t}(x₁)/(1 - t) = PT_{x₀→x_t}(log_{x₀} x₁)`` (the geodesic's velocity; the transported form has no
    ``1/(1 - t)``), and the loss is the mean of ``‖V_θ(t, x_t) - u_t‖²_g = ⟨d, d⟩_L``, ``d = V_θ - u_t`` (the
    Riemannian norm of a tangent vector is its Minkowski norm). Its minimiser's flow carries ``base`` to the data
    distribution.

    Args:
        field: the :class:`RiemannianFlow` (its field is used) or a field ``V(t, x)``.
        x1: data points (ambient, ``(B, n + 1)``).
        base: a distribution on the same manifold with ``sample`` (e.g. ``WrappedNormal.at_origin``).
        schedule: ``"uniform"`` or ``"logit-normal"`` times.
        coupling: ``"independent"`` pairs (``x₀`` and ``x₁`` drawn apart), or ``"ot"``: the base draws reordered by
            :func:`ot_pairing` (minibatch optimal transport under ``d²`` in blocks of ``ot_block``; straighter
            paths, lower-variance targets, faster training; one host copy per step).
        ot_block: points per exact assignment of ``"ot"``.

    Example:
        >>> from manifolds import Lorentz, WrappedNormal
        >>> M = Lorentz()
        >>> f = RiemannianFlow(M, 2, hidden=16)
        >>> base = WrappedNormal.at_origin(torch.ones(2), M)
        >>> loss = flow_matching_loss(f, M.expmap0_spatial(torch.randn(64, 2) + 2), base, coupling="ot")
        >>> loss.backward(); loss.dim()
        0
    """
    if coupling not in FM_COUPLINGS:
        raise ValueError(f"coupling must be one of {FM_COUPLINGS}; got {coupling!r}")
    V = field.field if isinstance(field, RiemannianFlow) else field
    M = V.manifold if hasattr(V, "manifold") else base.manifold
    with torch.no_grad():
        x0 = base.sample(x1.shape[:-1]).to(x1)
        if coupling == "ot":
            flat = x0.reshape(-1, x0.shape[-1])
            x0 = flat[ot_pairing(flat, x1.reshape(-1, x1.shape[-1]), M.k, ot_block)].reshape(x0.shape)
        t = sample_times(x1.shape[:-1], schedule, dtype=x1.dtype, device=x1.device, generator=generator)
        w = M.logmap(x0, x1)
        xt = M.expmap(x0, t.unsqueeze(-1) * w)
        ut = M.transp(x0, xt, w)
    d = V(t, xt) - ut
    return lm.inner(d, d).mean()


@register("rfm", ("Lorentz",), "Riemannian continuous flow on Hⁿ (a vector field on the manifold; trained by flow "
                               "matching, flows.flow_matching_loss; exact Riemannian divergence)")
def _rfm(manifold, dim, layers: int = DEFAULT_HIDDEN_LAYERS, hidden: int = DEFAULT_HIDDEN, conditioner: str = "mlp",
         **kw) -> Transform:
    """``layers`` hidden layers of width ``hidden`` in the field; ``**kw`` go to :class:`RiemannianFlow` (``trace``,
    ``method``, ``rtol``, ``atol``, ``activation``)."""
    if conditioner != "mlp":
        raise ValueError(f"the Riemannian flow's field is an MLP of [log_o x, t]; conditioner {conditioner!r} is not "
                         "supported")
    return RiemannianFlow(manifold, dim, hidden, layers, **kw)


__all__ = ["LorentzVectorField", "RiemannianFlow", "flow_matching_loss", "riemannian_divergence", "chart_velocity",
           "sample_times", "TIME_SCHEDULES", "minkowski_dual", "ot_pairing", "geodesic_sq_distances"]
