r"""Continuous normalizing flows (CNF): ``dz/dt = F(z, t)`` with ``d log|det|/dt = tr(∂F/∂z)``.

Neural ODEs (Chen et al., NeurIPS 2018, arXiv 1806.07366) and FFJORD (Grathwohl et al., ICLR 2019, arXiv
1810.01367): the ODE is solved by ``torchdiffeq`` (``odeint``, or ``odeint_adjoint`` for O(1)-memory gradients),
dopri5 by default, with the state augmented by the accumulated log-det. On Hⁿ the flow is lifted as
``exp_o ∘ f ∘ log_o`` (a vector field in tangent coordinates at the origin; ``"cnf@lorentz"``), which adds the
exp-map terms of ``MATH.md`` §4.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .constants import (CNF_ATOL, CNF_END_TIME, CNF_FIXED_METHODS, CNF_INVERSE_TOLERANCE_FACTOR,
                        CNF_LOGDET_TOLERANCE_FACTOR, CNF_MAX_EVALUATIONS, CNF_METHOD, CNF_MIN_TOLERANCE, CNF_RTOL,
                        DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, OUTPUT_INIT_SCALE)
from .extras import require
from .registry import on_rn, register
from .transform import Compose, Transform

Tensor = torch.Tensor

TRACES = ("exact", "hutchinson")
NOISES = ("gaussian", "rademacher")


class TimeMLP(nn.Module):
    r"""A time-dependent vector field ``F(z, t) = W_L tanh(… tanh(W_1 [z, t] + b_1) …) + b_L`` on ℝⁿ, with its
    divergence in closed form.

    ``∂F/∂z = W_L D_{L-1} W_{L-1} ⋯ D_1 W_1^{(z)}`` with ``D_k = diag(1 - h_k²)`` (``h_k`` the k-th hidden
    activation, ``W_1^{(z)}`` the columns of ``W_1`` acting on ``z``): :meth:`divergence` forms this ``n × n``
    product per point with ordinary first-order operations (O(n·hidden²) per point), so the exact trace costs no
    double backward; it equals the ``n`` vector-Jacobian products of :func:`exact_trace` (tested). The last layer
    starts small (scaled by :data:`~flows.constants.OUTPUT_INIT_SCALE`), so a CNF starts close to the identity
    while every parameter still receives a gradient.

    Args:
        dim: dimension ``n`` of ``z``.
        hidden: hidden width.
        layers: number of hidden layers (``≥ 1``).

    Example:
        >>> F = TimeMLP(3, hidden=8)
        >>> z, t = torch.randn(5, 3), torch.tensor(0.5)
        >>> F(z, t).shape
        torch.Size([5, 3])
        >>> v, div = F.divergence(z, t)
        >>> torch.allclose(div, exact_trace(F(z.requires_grad_(), t), z, create_graph=False), atol=1e-6)
        True
    """

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, layers: int = DEFAULT_HIDDEN_LAYERS) -> None:
        super().__init__()
        if int(layers) != layers or layers < 1:
            raise ValueError(f"the vector field needs at least one hidden layer; got layers={layers}")
        self.dim = dim
        sizes = [dim + 1] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], dim)
        with torch.no_grad():
            self.out.weight.mul_(OUTPUT_INIT_SCALE)
            self.out.bias.mul_(OUTPUT_INIT_SCALE)

    def _input(self, z: Tensor, t: Tensor) -> Tensor:
        return torch.cat([z, t.to(z.dtype).expand(*z.shape[:-1], 1)], dim=-1)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        h = self._input(z, t)
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.out(h)

    def divergence(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(F(z, t), tr ∂F/∂z)`` for ``z`` of shape ``(..., n)``."""
        h = self._input(z, t)
        G: Optional[Tensor] = None  # ∂h_k/∂z, shape (..., hidden, n)
        for layer in self.hidden:
            h = torch.tanh(layer(h))
            d = (1 - h * h).unsqueeze(-1)
            G = d * (layer.weight[:, :self.dim] if G is None else layer.weight @ G)
        div = torch.einsum("ij,...ji->...", self.out.weight, G)
        return self.out(h), div


def exact_trace(v: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    r"""``tr(∂v/∂z)`` for a batch ``v = F(z)`` of shape ``(B, n)`` (rows independent), by the ``n`` vector-Jacobian
    products ``e_iᵀ ∂v/∂z`` (batched into one call with ``is_grads_batched``; one by one for fields that
    ``vmap`` cannot batch).

    Example:
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> exact_trace(z @ A.T, z, create_graph=False)
        tensor([5., 5., 5.])
    """
    n = v.size(-1)
    if not v.requires_grad:  # F does not depend on z (or on anything that requires a gradient)
        return v.new_zeros(v.shape[:-1])
    basis = torch.eye(n, dtype=v.dtype, device=v.device).reshape(n, *([1] * (v.dim() - 1)), n).expand(n, *v.shape)
    try:
        (g,) = torch.autograd.grad(v, z, basis, create_graph=create_graph, retain_graph=True, allow_unused=True,
                                   is_grads_batched=True)
    except RuntimeError:  # a field vmap cannot batch: n separate products
        g = None
        rows = [torch.autograd.grad(v, z, basis[i], create_graph=create_graph, retain_graph=True,
                                    allow_unused=True)[0] for i in range(n)]
        if rows[0] is not None:
            g = torch.stack(rows)
    if g is None:
        return v.new_zeros(v.shape[:-1])
    return torch.diagonal(g, dim1=0, dim2=-1).sum(-1)  # Σ_i (e_iᵀ J)_i


def hutchinson_trace(v: Tensor, z: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
    r"""Hutchinson's estimate ``εᵀ (∂v/∂z) ε`` of ``tr(∂v/∂z)`` (one vector-Jacobian product), unbiased when
    ``E[εεᵀ] = I`` (Gaussian or Rademacher ``ε``). Hutchinson 1990; FFJORD.

    Example:
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> z = torch.randn(1, 2, requires_grad=True)
        >>> hutchinson_trace(z @ A.T, z, torch.tensor([[1.0, -1.0]]), create_graph=False)  # 1 - 2 - 3 + 4
        tensor([0.])
    """
    (g,) = torch.autograd.grad((v * noise).sum(), z, create_graph=create_graph, retain_graph=True, allow_unused=True)
    if g is None:
        return v.new_zeros(v.shape[:-1])
    return (g * noise).sum(-1)


def sample_noise(shape: torch.Size, kind: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Probe vectors with ``E[εεᵀ] = I``: standard normal (``"gaussian"``) or ±1 (``"rademacher"``)."""
    if kind == "gaussian":
        return torch.randn(shape, dtype=dtype, device=device)
    if kind == "rademacher":
        return torch.randint(0, 2, shape, device=device).to(dtype) * 2 - 1
    raise ValueError(f"noise must be one of {NOISES}; got {kind!r}")


class CountedDynamics:
    """Base of an ODE right-hand side that counts its evaluations and stops a solve past its budget
    (:data:`~flows.constants.CNF_MAX_EVALUATIONS`): a plain ``raise``, so it holds under ``python -O`` too."""

    evaluations: int = 0
    budget: int = CNF_MAX_EVALUATIONS

    def tick(self) -> None:
        self.evaluations += 1
        if self.evaluations > self.budget:
            raise RuntimeError(
                f"the ODE solve used more than {self.budget} vector-field evaluations without reaching its end time "
                "(a stiff or exploding field, or tolerances too tight for the dtype); loosen rtol/atol, pass steps= "
                "with a fixed-grid method (e.g. method='rk4', steps=50), or raise max_evaluations")


def check_solver_options(method: str, steps: Optional[int], max_evaluations: int) -> None:
    """One-line errors for a fixed number of steps with an adaptive method, or a bad step count or budget."""
    if steps is not None and (int(steps) != steps or steps < 1 or method not in CNF_FIXED_METHODS):
        raise ValueError(f"steps= needs a positive integer and a fixed-grid method {CNF_FIXED_METHODS}; got "
                         f"steps={steps!r}, method={method!r}")
    if int(max_evaluations) != max_evaluations or max_evaluations < 1:
        raise ValueError(f"max_evaluations must be a positive integer; got {max_evaluations!r}")


def check_dtype(module: nn.Module, x: Tensor) -> None:
    """A one-line ``ValueError`` naming both dtypes when ``x`` and ``module``'s parameters differ."""
    p = next(module.parameters(), None)
    if p is not None and p.dtype != x.dtype:
        raise ValueError(f"{type(module).__name__} has {p.dtype} parameters but got {x.dtype} inputs; cast one to "
                         f"the other (flow.to({x.dtype}) or x.to({p.dtype}))")


def guarded_odeint(dynamics: CountedDynamics, z0: Tensor, times: Tensor, *, method: str, rtol: float, atol: float,
                   steps: Optional[int] = None, max_evaluations: int = CNF_MAX_EVALUATIONS,
                   adjoint_params: Optional[tuple[Tensor, ...]] = None) -> tuple[Tensor, Tensor]:
    r"""Solve ``d(z, ℓ)/dt = dynamics(t, (z, ℓ))`` from ``(z0, 0)`` over ``times`` (two entries) and return the end
    state. Rows of ``z0`` that are not finite never reach the solver (they are solved as zeros, which no other row
    sees, and come back as NaN, with NaN log-dets): one bad point no longer stops the batch with torchdiffeq's
    ``underflow in dt``. The solve stops with a one-line error past ``max_evaluations`` field evaluations
    (:class:`CountedDynamics`), and a torchdiffeq assertion becomes a one-line ``FloatingPointError``.
    ``steps`` solves on a fixed grid of that many steps (``method`` one of
    :data:`~flows.constants.CNF_FIXED_METHODS`); ``adjoint_params`` solves by the adjoint method."""
    torchdiffeq = require("torchdiffeq", "the ODE solves of continuous flows (flows.build('cnf'), flows.build('rfm'))")
    odeint, odeint_adjoint = torchdiffeq.odeint, torchdiffeq.odeint_adjoint
    finite = torch.isfinite(z0).all(-1)
    z0 = torch.where(finite.unsqueeze(-1), z0, torch.zeros_like(z0))
    dynamics.budget = int(max_evaluations)
    kwargs: dict = {"method": method}
    if steps is None:
        kwargs.update(rtol=rtol, atol=atol)
    else:
        kwargs["options"] = {"step_size": float(abs(times[-1] - times[0])) / int(steps)}
    state = (z0, z0.new_zeros(z0.shape[0]))
    try:
        if adjoint_params is not None:
            zs, ls = odeint_adjoint(dynamics, state, times, adjoint_params=adjoint_params, **kwargs)
        else:
            zs, ls = odeint(dynamics, state, times, **kwargs)
    except AssertionError as e:
        raise FloatingPointError(f"the ODE solver stopped ({str(e).splitlines()[0][:120]}): the field is too stiff "
                                 "for these tolerances; loosen rtol/atol or pass steps= with a fixed-grid method "
                                 "(e.g. method='rk4', steps=50)") from None
    nan = torch.full_like(zs[-1], math.nan)
    return torch.where(finite.unsqueeze(-1), zs[-1], nan), torch.where(finite, ls[-1], nan[:, 0])


class _Dynamics(CountedDynamics):
    r"""The augmented right-hand side in rescaled time ``s ∈ [0, 1]``, ``t = s·T``:
    ``d(z, ℓ)/ds = T·(F(z, sT), tr ∂F/∂z)``. One object per solve, so Hutchinson's noise stays fixed through the
    forward solve and (with the adjoint) through the backward solve that runs later."""

    def __init__(self, field: nn.Module, end_time: Callable[[], Tensor], noise: Optional[Tensor]) -> None:
        self.field, self.end_time, self.noise = field, end_time, noise
        self.evaluations = 0

    def __call__(self, s: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = state[0]
        self.tick()
        T = self.end_time()
        if self.noise is None and hasattr(self.field, "divergence"):  # closed-form exact trace
            v, tr = self.field.divergence(z, s * T)
            return T * v, T * tr
        differentiable = torch.is_grad_enabled()  # the caller will differentiate the outputs
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            T = self.end_time()
            v = self.field(z, s * T)
            if self.noise is None:
                tr = exact_trace(v, z, create_graph=differentiable)
            else:
                tr = hutchinson_trace(v, z, self.noise, create_graph=differentiable)
            dz, dl = T * v, T * tr
        if not differentiable:
            dz, dl = dz.detach(), dl.detach()
        return dz, dl


class ContinuousFlow(Transform):
    r"""A continuous normalizing flow on ℝⁿ (one ODE block): ``y = z(T)`` for ``dz/dt = F(z, t)``, ``z(0) = x``.

    ``log|det ∂y/∂x| = ∫₀ᵀ tr(∂F/∂z(z(t), t)) dt`` (so ``Δ log p = -log|det|``; Chen et al. 2018, FFJORD), solved
    with ``z`` in one augmented ODE; the inverse integrates from ``T`` back to ``0``. The trace is exact (``n``
    vector-Jacobian products, :func:`exact_trace`; or the field's closed-form ``divergence(z, t) -> (F, tr)`` when
    it has one, as :class:`TimeMLP` does) or Hutchinson's estimate ``εᵀ(∂F/∂z)ε`` with one probe ``ε`` per point,
    fixed for the whole solve (Gaussian or Rademacher; unbiased, so ``log_prob`` is unbiased too). Time is rescaled to
    ``s ∈ [0, 1]`` (``dz/ds = T·F(z, sT)``), so a learnable end time ``T = softplus(τ)`` is an ordinary parameter
    and gets its gradient from backprop and from the adjoint alike.

    Accuracy: everything is exact up to the solver's error (local tolerances ``rtol``, ``atol``; floored at
    :data:`~flows.constants.CNF_MIN_TOLERANCE` for the dtype, since float32 cannot reach float64 tolerances).
    ``inverse_tolerance`` and ``logdet_tolerance`` state the resulting accuracy of round trips and log-dets
    (float64, the documented working range: ``‖x‖ ≤ 10``, ``|F| = O(1)``, ``T = O(1)``).

    Args:
        dim: dimension ``n``.
        hidden: width of the default vector field (:class:`TimeMLP`).
        hidden_layers: depth of the default vector field.
        field: a vector field module ``F(z, t)`` (replaces the default; rows of ``z`` must not interact).
        end_time: initial ``T > 0``.
        learn_end_time: make ``T`` a parameter.
        trace: ``"exact"`` or ``"hutchinson"``.
        noise: Hutchinson probes, ``"gaussian"`` or ``"rademacher"``.
        adjoint: gradients by the adjoint method (``odeint_adjoint``) instead of backprop through the solver.
        method: a ``torchdiffeq`` solver.
        rtol, atol: solver tolerances (also used by the adjoint solve).
        steps: solve on a fixed grid of ``steps`` steps instead (``method`` one of
            :data:`~flows.constants.CNF_FIXED_METHODS`, e.g. ``"rk4"``): a bounded cost whatever the field.
        max_evaluations: the step budget (:data:`~flows.constants.CNF_MAX_EVALUATIONS`): a solve that needs more
            field evaluations stops with a one-line ``RuntimeError`` (also under ``python -O``).

    Inputs with a non-finite coordinate give NaN rows (and NaN log-dets) without reaching the solver; inputs of
    another dtype than the parameters are a one-line ``ValueError`` naming both.

    Example:
        >>> f = ContinuousFlow(2, hidden=16)
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> f = f.double()
        >>> y, ladj = f(x)
        >>> x_back, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-8)), bool(torch.allclose(ladj_inv, -ladj, atol=1e-8))
        (True, True)
    """

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, hidden_layers: int = DEFAULT_HIDDEN_LAYERS, *,
                 field: Optional[nn.Module] = None, end_time: float = CNF_END_TIME, learn_end_time: bool = True,
                 trace: str = "exact", noise: str = "gaussian", adjoint: bool = False, method: str = CNF_METHOD,
                 rtol: float = CNF_RTOL, atol: float = CNF_ATOL, steps: Optional[int] = None,
                 max_evaluations: int = CNF_MAX_EVALUATIONS) -> None:
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim}")
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}; got {trace!r}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
        if not end_time > 0:
            raise ValueError(f"end_time must be positive; got {end_time}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive; got rtol={rtol}, atol={atol}")
        self.dim = int(dim)
        self.field = field if field is not None else TimeMLP(dim, hidden, hidden_layers)
        raw = torch.tensor(end_time + math.log(-math.expm1(-end_time)))  # softplus⁻¹(T)
        if learn_end_time:
            self.raw_end_time = nn.Parameter(raw)
        else:
            self.register_buffer("raw_end_time", raw)
        self.trace, self.noise, self.adjoint, self.method = trace, noise, adjoint, method
        self.rtol, self.atol = float(rtol), float(atol)
        check_solver_options(method, steps, max_evaluations)
        self.steps, self.max_evaluations = steps, int(max_evaluations)
        #: number of vector-field evaluations of the last solve (a diagnostic of the solver's cost)
        self.last_evaluations = 0

    @property
    def inverse_tolerance(self) -> float:  # type: ignore[override]
        """Stated max abs error of ``inverse`` (round trips), ``CNF_INVERSE_TOLERANCE_FACTOR · max(rtol, atol)``."""
        return CNF_INVERSE_TOLERANCE_FACTOR * max(self.rtol, self.atol)

    @property
    def logdet_tolerance(self) -> float:
        """Stated max abs error of the log-dets (exact trace; for Hutchinson, of their expectation),
        ``CNF_LOGDET_TOLERANCE_FACTOR · max(rtol, atol)``."""
        return CNF_LOGDET_TOLERANCE_FACTOR * max(self.rtol, self.atol)

    @property
    def end_time(self) -> Tensor:
        """``T = softplus(τ)``."""
        return F.softplus(self.raw_end_time)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, trace={self.trace!r}, method={self.method!r}, rtol={self.rtol:g}, "
                f"atol={self.atol:g}, adjoint={self.adjoint}")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(x, reverse=False)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._solve(y, reverse=True)

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        floor = CNF_MIN_TOLERANCE.get(str(dtype).removeprefix("torch."), CNF_MIN_TOLERANCE["float32"])
        return max(self.rtol, floor), max(self.atol, floor)

    def _solve(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        if x.dim() == 0 or x.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} coordinates in the last dimension; "
                             f"got shape {tuple(x.shape)}")
        check_dtype(self, x)
        batch = x.shape[:-1]
        z0 = x.reshape(-1, self.dim)
        noise = None
        if self.trace == "hutchinson":
            noise = sample_noise(z0.shape, self.noise, z0.dtype, z0.device)
        end_time = lambda: F.softplus(self.raw_end_time).to(z0.dtype)  # noqa: E731
        dynamics = _Dynamics(self.field, end_time, noise)
        s = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=z0.dtype, device=z0.device)
        rtol, atol = self._tolerances(z0.dtype)
        params = tuple(p for p in self.parameters() if p.requires_grad) if self.adjoint else None
        try:
            z, logdet = guarded_odeint(dynamics, z0, s, method=self.method, rtol=rtol, atol=atol, steps=self.steps,
                                       max_evaluations=self.max_evaluations, adjoint_params=params)
        finally:
            self.last_evaluations = dynamics.evaluations
        return z.reshape(*batch, self.dim), logdet.reshape(batch)


@register("cnf", on_rn, "continuous normalizing flow on ℝⁿ (FFJORD; torchdiffeq dopri5, exact trace)",
          lift=True)
def _cnf(manifold, dim, layers: int = DEFAULT_HIDDEN_LAYERS, hidden: int = DEFAULT_HIDDEN, conditioner: str = "mlp",
         blocks: int = 1, **kw) -> Transform:
    """One ODE block whose vector field has ``layers`` hidden layers of width ``hidden``; ``blocks > 1`` stacks
    that many blocks (FFJORD's ``num_blocks``; each is a separate solve). ``**kw`` go to :class:`ContinuousFlow`
    (``trace``, ``adjoint``, ``rtol``, ``atol``, ``learn_end_time``, …)."""
    if conditioner != "mlp":
        raise ValueError(f"the CNF's vector field is an MLP of [z, t]; conditioner {conditioner!r} is not supported")
    if int(blocks) != blocks or blocks < 1:
        raise ValueError(f"blocks must be a positive integer; got {blocks}")
    flows_ = [ContinuousFlow(dim, hidden, layers, **kw) for _ in range(blocks)]
    return flows_[0] if blocks == 1 else Compose(flows_)
