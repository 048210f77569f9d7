r"""Riemannian continuous flows on any manifold of the interface, trained by flow matching, with exact likelihoods.

On a general manifold (Sⁿ, Tⁿ, ℝⁿ, products) :class:`AmbientRiemannianFlow` integrates ``dx/dt = V(t, x)`` in
ambient coordinates with the divergence the manifold declares (:meth:`~manifolds.base.ManifoldOps.divergence`), and
:func:`flow_matching_loss` uses the geodesic path from ``expmap`` / ``logmap`` (:func:`geodesic_path`) and OT pairs
from ``dist``. The rest of this docstring is the hyperboloid's own implementation, in its global chart ``log_o``:

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

from manifolds import Lorentz
from manifolds import lorentz_math as lm
from manifolds.base import ManifoldOps, embedded_divergence

from .constants import (CNF_ATOL, CNF_INVERSE_TOLERANCE_FACTOR, CNF_LOGDET_TOLERANCE_FACTOR, CNF_MAX_EVALUATIONS,
                        CNF_METHOD, CNF_MIN_TOLERANCE, CNF_RTOL, DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, FM_COUPLINGS,
                        FM_OT_BLOCK, OUTPUT_INIT_SCALE, RFM_ACTIVATION, RFM_ACTIVATIONS, RFM_CHART_SERIES_THRESHOLD)
from .continuous import (TRACES, CountedDynamics, check_dtype, check_solver_options, exact_trace, guarded_odeint,
                         hutchinson_trace)
from .extras import require
from .registry import on_any, register
from .transform import IsometricTransform, TangentNativeTransform, Transform

Tensor = torch.Tensor

TIME_SCHEDULES = ("uniform", "logit-normal")


def minkowski_dual(v: Tensor) -> Tensor:
    """``G v`` (the time coordinate negated): ``⟨a, b⟩_L = (G a)ᵀ b``."""
    return torch.cat([-v[..., :1], v[..., 1:]], dim=-1)


#: the field's activations by name (their names and the default: :data:`~flows.constants.RFM_ACTIVATIONS`)
_ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}
assert set(_ACTIVATION_FUNCTIONS) == set(RFM_ACTIVATIONS)


class _TimeMLPField(nn.Module):
    """Base of the fields: ``mlp(t, h)`` is an MLP of ``[h, t]`` (``layers`` hidden layers of width ``hidden``,
    ``activation``) with ``outputs`` outputs (``dim`` by default) whose last layer starts small (a flow near the
    identity that trains every parameter); ``inputs`` is the length of ``h`` (``dim`` by default)."""

    def __init__(self, manifold: ManifoldOps, dim: int, hidden: int, layers: int, activation: str, *,
                 inputs: int | None = None, outputs: int | None = None) -> None:
        super().__init__()
        if activation not in RFM_ACTIVATIONS:
            raise ValueError(f"activation must be one of {RFM_ACTIVATIONS}; got {activation!r}")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim}")
        if int(layers) != layers or layers < 1:
            raise ValueError(f"layers (hidden layers of the vector field) must be a positive integer; got {layers}")
        self.manifold = manifold
        self.dim = int(dim)
        self.activation = activation
        self._act = _ACTIVATION_FUNCTIONS[activation]
        sizes = [(self.dim if inputs is None else inputs) + 1] + [int(hidden)] * int(layers)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], self.dim if outputs is None else outputs)
        with torch.no_grad():
            self.out.weight.mul_(OUTPUT_INIT_SCALE)
            self.out.bias.zero_()

    def mlp(self, t: Tensor, h: Tensor) -> Tensor:
        """The MLP at time ``t`` (a scalar or the batch shape) and inputs ``h``."""
        t = torch.as_tensor(t, dtype=h.dtype, device=h.device).expand(h.shape[:-1]).unsqueeze(-1)
        h = torch.cat([h, t], dim=-1)
        for layer in self.hidden:
            h = self._act(layer(h))
        return self.out(h)


class LorentzVectorField(_TimeMLPField):
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
        if not isinstance(manifold, Lorentz):
            raise ValueError(f"LorentzVectorField needs a Lorentz manifold (it uses its curvature k); got "
                             f"{manifold.name}: use TangentVectorField on other manifolds")
        super().__init__(manifold, dim, hidden, layers, activation)

    def frame_coordinates(self, t: Tensor, u: Tensor) -> Tensor:
        """``z_θ(t, u)``: the field's coordinates in the frame transported from the origin, at ``x = exp_o(u)``."""
        return self.mlp(t, u)

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
        # 1/σ = q/sinh q = 2q·e^{-q}/(1 - e^{-2q}): no overflow far out, nor in its gradient (σ² would overflow
        # float32 beyond |u| ≈ 48·√k and turn the divergence into inf·0)
        inv_sigma = torch.where(small, 1 / sigma_series, 2 * q * torch.exp(-q) / -torch.expm1(-2 * q))
        c = torch.where(small, (1 + q2 / 20) / (6 * k * sigma_series), (1 - inv_sigma) / r2s)
        return z * inv_sigma + c * (z * u).sum(-1, keepdim=True) * u

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
        return embedded_divergence(v, x, probe=noise, probe_dual=minkowski_dual(noise), create_graph=create_graph)
    xd = x.detach()
    return embedded_divergence(v, x, [(-minkowski_dual(xd) / k, xd)], create_graph=create_graph)


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


class _ChartDynamics(CountedDynamics):
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
        self.tick()
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


class _ODESolver:
    """Construction, solver settings, stated tolerances and the ``torchdiffeq`` call shared by the Riemannian flows
    (the state is ``(y, ℓ)``, ``y`` a ``(B, m)`` batch and ``ℓ`` the accumulated divergence); a subclass names its
    default field class (``_default_field``) and may refuse a manifold (``_check_manifold``)."""

    _default_field: type

    def __init__(self, manifold: ManifoldOps, dim: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, *, field: Optional[nn.Module] = None, trace: str = "exact",
                 method: str = CNF_METHOD, rtol: float = CNF_RTOL, atol: float = CNF_ATOL,
                 activation: str = RFM_ACTIVATION, steps: Optional[int] = None,
                 max_evaluations: int = CNF_MAX_EVALUATIONS) -> None:
        self._check_manifold(manifold)
        super().__init__(manifold)
        self._set_solver(trace, method, rtol, atol)
        check_solver_options(method, steps, max_evaluations)
        self.steps, self.max_evaluations = steps, int(max_evaluations)
        self.dim = int(dim)
        self.field = field if field is not None else self._default_field(manifold, dim, hidden, layers, activation)

    @staticmethod
    def _check_manifold(manifold: ManifoldOps) -> None:
        """Raise ``ValueError`` if the flow cannot act on ``manifold`` (every manifold by default)."""

    def _set_solver(self, trace: str, method: str, rtol: float, atol: float) -> None:
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}; got {trace!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive; got rtol={rtol}, atol={atol}")
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

    def _integrate(self, dynamics, y0: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """``(y(1), ℓ(1))`` from ``(y0, 0)`` at ``t = 0`` (``reverse``: from ``t = 1`` to 0), tolerances floored per
        dtype at :data:`~flows.constants.CNF_MIN_TOLERANCE`."""
        times = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=y0.dtype, device=y0.device)
        floor = CNF_MIN_TOLERANCE.get(str(y0.dtype).removeprefix("torch."), CNF_MIN_TOLERANCE["float32"])
        try:
            return guarded_odeint(dynamics, y0, times, method=self.method, rtol=max(self.rtol, floor),
                                  atol=max(self.atol, floor), steps=self.steps, max_evaluations=self.max_evaluations)
        finally:
            self.last_evaluations = dynamics.evaluations


class RiemannianFlow(_ODESolver, TangentNativeTransform):
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
        steps: solve on a fixed grid of ``steps`` steps (``method`` one of
            :data:`~flows.constants.CNF_FIXED_METHODS`, e.g. ``"rk4"``): a bounded cost, e.g. for brute-force
            log-det checks far from the origin, where the adaptive solver grinds.
        max_evaluations: the step budget (:data:`~flows.constants.CNF_MAX_EVALUATIONS`): a solve that needs more
            field evaluations stops with a one-line ``RuntimeError`` (also under ``python -O``).

    Inputs with a non-finite coordinate give NaN rows (and NaN log-dets) without reaching the solver; inputs of
    another dtype than the parameters are a one-line ``ValueError`` naming both.

    **Finite envelope of scoring.** The field is evaluated in the chart, where ``d exp_o`` enters as
    ``q/sinh q`` (``q = |u|/√k``, computed from ``e^{-q}``: neither it nor its gradient overflows), so log-densities
    of :class:`~flows.Flow` are finite for every point whose ambient coordinates are finite: tangent norms up to
    ≈ 88·√k in float32 and ≈ 709·√k in float64 (the overflow of ``cosh``), with the default field or one whose
    weights have been moved by O(1) (tested at 0.2 per weight, ``tests/flows/test_rfm.py``).

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

    _default_field = LorentzVectorField

    @staticmethod
    def _check_manifold(manifold: ManifoldOps) -> None:
        if not isinstance(manifold, Lorentz):
            raise ValueError(f"RiemannianFlow integrates in the hyperboloid's chart log_o (it uses its curvature k); "
                             f"got {manifold.name}: use AmbientRiemannianFlow, or flows.build('rfm', M, n)")

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(w, reverse=False)

    def inverse_tangent(self, v: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(v, reverse=True)

    def _solve(self, u: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        if u.dim() == 0 or u.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} tangent coordinates in the last dimension; "
                             f"got shape {tuple(u.shape)}")
        check_dtype(self, u)
        batch = u.shape[:-1]
        u0 = u.reshape(-1, self.dim)
        probes = torch.randn_like(u0) if self.trace == "hutchinson" else None
        k = self.manifold.k.to(u0.dtype)
        u1, l1 = self._integrate(_ChartDynamics(self.field, k, probes), u0, reverse)
        return u1.reshape(*batch, self.dim), l1.reshape(batch)


class TangentVectorField(_TimeMLPField):
    r"""A time-dependent tangent vector field on any manifold of the interface, in ambient coordinates:
    ``V_θ(t, x) = proju_x(z_θ(t, φ(x)))``, ``z_θ`` an MLP of ``[φ(x), t]`` with ``φ = manifold.features`` (the ambient
    coordinates, or a continuous encoding such as the torus's ``(cos θ, sin θ)``) and ``ambient_dim(n)`` outputs,
    whose last layer starts small (a flow near the identity). The projection makes tangency exact to rounding.
    (On Hⁿ the default is :class:`LorentzVectorField`, whose transported frame keeps ``|V|_g`` bounded far from the
    origin, where the ambient coordinates grow like ``cosh d``.)

    Args:
        manifold: any :class:`~manifolds.base.ManifoldOps`.
        dim: intrinsic dimension ``n``.
        hidden, layers, activation: width, hidden layers and activation of the MLP (as :class:`LorentzVectorField`).

    Example:
        >>> from manifolds import Euclidean
        >>> V = TangentVectorField(Euclidean(), 2, hidden=8)
        >>> V(torch.tensor(0.5), torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(self, manifold: ManifoldOps, dim: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, activation: str = RFM_ACTIVATION) -> None:
        n = int(dim) if int(dim) == dim and dim >= 1 else 1  # sizes only; the base reports a bad dim
        super().__init__(manifold, dim, hidden, layers, activation, inputs=manifold.feature_dim(n),
                         outputs=manifold.ambient_dim(n))

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``V_θ(t, x) ∈ T_xM`` (ambient coordinates) for points ``x`` (ambient)."""
        return self.manifold.proju(x, self.mlp(t, self.manifold.features(x)))


class _AmbientDynamics(CountedDynamics):
    """``d(x, ℓ)/dt = (V(t, π(x)), div_g V(π(x)))`` in ambient coordinates, ``π = manifold.projx`` (the exact flow
    stays on the manifold; ``π`` keeps rounding and solver error from taking the field's argument off it), the
    divergence from :meth:`~manifolds.base.ManifoldOps.divergence`; one object per solve (fixed Hutchinson probes)."""

    def __init__(self, field: nn.Module, manifold: ManifoldOps, probes: Optional[Tensor]) -> None:
        self.field, self.manifold, self.probes = field, manifold, probes
        self.evaluations = 0

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        self.tick()
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            xp = self.manifold.projx(x)
            v = self.field(t, xp)
            div = self.manifold.divergence(v, xp, probe=self.probes, create_graph=differentiable)
        if not differentiable:
            v, div = v.detach(), div.detach()
        return v, div


class AmbientRiemannianFlow(_ODESolver, Transform):
    r"""The flow ``x(0) ↦ x(1)`` of ``dx/dt = V_θ(t, x)`` on any manifold of the interface (``forward`` = base →
    data), integrated in ambient coordinates, with the Riemannian log-det ``∫₀¹ div_g V_t(x(t)) dt`` from the
    manifold's :meth:`~manifolds.base.ManifoldOps.divergence` (exact, or Hutchinson's estimate). The field is
    evaluated at ``projx(x)`` and the end point is projected, so the result lies on the manifold to rounding; the
    error is the solver's (``inverse_tolerance`` / ``logdet_tolerance``, as for :class:`RiemannianFlow`). No chart
    is needed, so it works where ``log_o`` is not global (Sⁿ, Tⁿ, products). ``flows.build("rfm", M, n)`` makes it
    on every manifold but Hⁿ (:class:`RiemannianFlow`, in the global chart ``log_o``) and those with an isometric
    model (through the isometry). Train it by :func:`flow_matching_loss`.

    Args:
        manifold: any :class:`~manifolds.base.ManifoldOps` implementing ``divergence``.
        dim: intrinsic dimension ``n``.
        hidden, layers, activation: the default :class:`TangentVectorField`.
        field: a field module ``V(t, x)`` (ambient points → ambient tangent vectors) replacing the default.
        trace: ``"exact"`` or ``"hutchinson"``.
        method, rtol, atol: the ``torchdiffeq`` solver and its tolerances (floored per dtype at
            :data:`~flows.constants.CNF_MIN_TOLERANCE`).

    Example:
        >>> from manifolds import Euclidean
        >>> f = AmbientRiemannianFlow(Euclidean(), 2, hidden=16).double()
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> x_back, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-7)), bool(torch.allclose(ladj_inv, -ladj, atol=1e-7))
        (True, True)
    """

    _default_field = TangentVectorField

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(x, reverse=False)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(y, reverse=True)

    def _solve(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        m = self.manifold.ambient_dim(self.dim)
        if x.dim() == 0 or x.size(-1) != m:
            raise ValueError(f"{type(self).__name__} expects {m} ambient coordinates (dimension {self.dim} on "
                             f"{self.manifold.name}) in the last dimension; got shape {tuple(x.shape)}")
        check_dtype(self, x)
        batch = x.shape[:-1]
        x0 = x.reshape(-1, m)
        probes = torch.randn_like(x0) if self.trace == "hutchinson" else None
        x1, l1 = self._integrate(_AmbientDynamics(self.field, self.manifold, probes), x0, reverse)
        return self.manifold.projx(x1).reshape(*batch, m), l1.reshape(batch)


def geodesic_path(manifold: ManifoldOps, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""The geodesic conditional path of Riemannian flow matching and its velocity, in closed form from
    ``expmap`` / ``logmap``: ``x_t = exp_{x₀}(t·log_{x₀} x₁)`` and

    .. math:: u_t = \dot x_t = \frac{\log_{x_t} x_1}{1 - t} = -\frac{\log_{x_t} x_0}{t} ,

    (a geodesic has constant speed ``d(x₀, x₁)`` and points from ``x_t`` towards ``x₁``, away from ``x₀``), taking
    the form whose denominator is at least 1/2 (``t < 1/2``: the first), so that no ``t ∈ [0, 1]`` divides by a
    small number. Exact while ``d(x₀, x₁)`` is below the injectivity radius (a.s. on Sⁿ and Tⁿ: the cut locus has
    measure zero); ``t`` has the batch shape.

    Example:
        >>> from manifolds import Euclidean
        >>> x0, x1, t = torch.zeros(1, 2), torch.tensor([[2.0, 4.0]]), torch.tensor([0.25])
        >>> geodesic_path(Euclidean(), x0, x1, t)
        (tensor([[0.5000, 1.0000]]), tensor([[2., 4.]]))
    """
    t = t.unsqueeze(-1)
    xt = manifold.expmap(x0, t * manifold.logmap(x0, x1))
    first = t < 0.5
    toward = manifold.logmap(xt, torch.where(first, x1, x0))
    return xt, torch.where(first, toward / (1 - t), -toward / torch.where(first, torch.ones_like(t), t))


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


def geodesic_sq_distances(x: Tensor, y: Tensor, k: Tensor | float | ManifoldOps) -> Tensor:
    r"""All squared geodesic distances ``C_ij = d(x_i, y_j)²`` of ``x`` ``(..., B, n+1)`` and ``y`` ``(..., B', n+1)``
    on Hⁿ_k, as ``(..., B, B')`` float64, by :func:`manifolds.lorentz_math.dist_polar` (radii and the angle
    between the spatial parts, with exact products): every entry keeps its relative accuracy at any distance the
    coordinates represent. (The form ``k·arccosh²(-⟨x_i, y_j⟩_L / k)`` cancels completely for nearby points far
    from the origin: at distance 20 or 50 from it an assignment on those costs was 8× the optimum.)
    With a manifold in place of ``k``: ``dist(x_i, y_j)²`` on it (any manifold of the interface, float64;
    :func:`flow_matching_loss` pairs by this).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=2.0)
        >>> x, y = M.expmap0_spatial(torch.randn(3, 2)), M.expmap0_spatial(torch.randn(4, 2))
        >>> torch.allclose(geodesic_sq_distances(x, y, 2.0), M.dist(x[:, None], y[None]).double() ** 2, atol=1e-5)
        True
    """
    if isinstance(k, ManifoldOps):  # any manifold: d² from its dist
        return k.dist(x.double().unsqueeze(-2), y.double().unsqueeze(-3)).double() ** 2
    k = _checked_k(k, x.device)
    return lm.dist_polar(x.unsqueeze(-2), y.unsqueeze(-3), k) ** 2


def _checked_k(k: Tensor | float, device: torch.device) -> Tensor:
    """``k`` as a float64 scalar tensor, refused unless a finite positive scalar (one host read)."""
    kt = torch.as_tensor(k, dtype=torch.float64, device=device)
    if kt.numel() != 1 or not bool(torch.isfinite(kt).all() & (kt > 0).all()):
        raise ValueError(f"k (the curvature parameter of Hⁿ_k, curvature -1/k) must be one finite positive number; "
                         f"got {k!r}")
    return kt.reshape(())


def ot_pairing(x0: Tensor, x1: Tensor, k: Tensor | float | ManifoldOps, block: int = FM_OT_BLOCK) -> Tensor:
    r"""Minibatch optimal transport: the permutation ``π`` of ``x0``'s rows (``(B, n+1)``) that minimises
    ``Σ_i d(x0_{π(i)}, x1_i)²`` within each run of ``block`` consecutive rows (the last one may be shorter): an exact
    assignment per block (Hungarian, ``scipy.optimize.linear_sum_assignment``), pairing ``x0[π]`` with ``x1``.

    A permutation keeps both samples as they are, so pairs ``(x0[π(i)], x1[i])`` are a coupling with the base and the
    data as marginals (Tong et al. 2023; Pooladian et al. 2023): flow matching on them still carries the base to the
    data, along straighter, less crossing paths. The assignment runs on the CPU: one device → host copy of the costs
    per call (on a GPU, a synchronisation; the rest of a flow-matching step makes none).

    ``k``: the curvature parameter of Hⁿ_k (or a :class:`~manifolds.Lorentz`: its ``k``), costs by the
    cancellation-free :func:`geodesic_sq_distances`; or any other manifold of the interface, costs by its ``dist``.

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
    if isinstance(k, Lorentz):  # Hⁿ: the cancellation-free costs of its k
        k = k.k.detach()
    if not isinstance(k, ManifoldOps):
        k = _checked_k(k, x0.device)
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


def flow_matching_loss(field: Callable[[Tensor, Tensor], Tensor] | Transform, x1: Tensor, base,
                       *, schedule: str = "uniform", coupling: str = "independent", ot_block: int = FM_OT_BLOCK,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Riemannian flow matching (Chen & Lipman 2024) on any manifold with geodesic conditional paths:

    ``x₀ ~ base``, ``t ~ schedule``, ``x_t = exp_{x₀}(t·log_{x₀}(x₁))`` and the target velocity
    ``u_t = log_{x_t}(x₁)/(1 - t) = -log_{x_t}(x₀)/t`` (the geodesic's velocity, :func:`geodesic_path`; on Hⁿ_k it is
    ``PT_{x₀→x_t}(log_{x₀} x₁)``), and the loss is the mean of ``‖V_θ(t, x_t) - u_t‖²_g`` (``manifold.inner``; on
    Hⁿ_k the Minkowski norm). Its minimiser's flow carries ``base`` to the data distribution. A flow carried through
    an isometry (:class:`~flows.transform.IsometricTransform`, e.g. ``rfm`` on the Poincaré ball) is matched in its
    model: ``x₁`` and the base draws are mapped there.

    Args:
        field: the flow (:class:`RiemannianFlow`, :class:`AmbientRiemannianFlow`, or one of them through an isometry:
            its field is used) or a field ``V(t, x)`` on ``base.manifold``.
        x1: data points (ambient coordinates, ``(B, m)``).
        base: a distribution on the same manifold with ``sample`` (e.g. ``WrappedNormal.at_origin``).
        schedule: ``"uniform"`` or ``"logit-normal"`` times.
        coupling: ``"independent"`` pairs (``x₀`` and ``x₁`` drawn apart), or ``"ot"``: the base draws reordered by
            :func:`ot_pairing` (minibatch optimal transport under ``dist²`` in blocks of ``ot_block``; straighter
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
    to_model = None
    if isinstance(field, IsometricTransform):  # a flow carried through an isometry: match in the model
        field, to_model = field.inner, field.to_model
        x1 = to_model(x1)
    flow = field if isinstance(field, (RiemannianFlow, AmbientRiemannianFlow)) else None
    V = field if flow is None else flow.field
    M = base.manifold if flow is None else flow.manifold
    with torch.no_grad():
        x0 = base.sample(x1.shape[:-1])
        x0 = (x0 if to_model is None else to_model(x0)).to(x1)
        if coupling == "ot":
            flat = x0.reshape(-1, x0.shape[-1])
            x0 = flat[ot_pairing(flat, x1.reshape(-1, x1.shape[-1]), M, ot_block)].reshape(x0.shape)
        t = sample_times(x1.shape[:-1], schedule, dtype=x1.dtype, device=x1.device, generator=generator)
        xt, ut = geodesic_path(M, x0, x1, t)
    d = V(t, xt) - ut
    return M.inner(xt, d, d).mean()


@register("rfm", on_any, "Riemannian continuous flow on any manifold (a vector field on it; trained by flow "
                         "matching, flows.flow_matching_loss; exact Riemannian divergence)")
def _rfm(manifold, dim, layers: int = DEFAULT_HIDDEN_LAYERS, hidden: int = DEFAULT_HIDDEN, conditioner: str = "mlp",
         **kw) -> Transform:
    """``layers`` hidden layers of width ``hidden`` in the field; ``**kw`` go to :class:`RiemannianFlow` (``trace``,
    ``method``, ``rtol``, ``atol``, ``activation``)."""
    if conditioner != "mlp":
        raise ValueError(f"the Riemannian flow's field is an MLP of [log_o x, t]; conditioner {conditioner!r} is not "
                         "supported")
    # Hⁿ has its own implementation, in the global chart log_o with a transported frame (exact far from o)
    cls = RiemannianFlow if isinstance(manifold, Lorentz) else AmbientRiemannianFlow
    return cls(manifold, dim, hidden, layers, **kw)


__all__ = ["LorentzVectorField", "RiemannianFlow", "TangentVectorField", "AmbientRiemannianFlow", "geodesic_path",
           "flow_matching_loss", "riemannian_divergence", "chart_velocity",
           "sample_times", "TIME_SCHEDULES", "minkowski_dual", "ot_pairing", "geodesic_sq_distances"]
