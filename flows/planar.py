r"""Residual maps with a one-dimensional (planar, radial) or low-rank (Sylvester) update of ℝⁿ.

``forward`` (base → data) is the closed form of each paper; the inverse has no closed form for planar and
Sylvester flows but reduces *exactly* to scalar monotone equations ``s + a·tanh(c·s + d) = t`` with
``1 + a·c > 0`` (one per layer for planar, ``M`` solved by back-substitution for Sylvester), solved by
bracketed Newton (:func:`solve_tanh_equation`). The radial inverse reduces to a quadratic in ``r = ‖x − x₀‖`` and
is closed-form. The numerical inverses are differentiable (implicit function theorem: the solve is run without
a graph, and its result carries the implicit derivative), so the density direction can be trained.

Registered as ``"planar"``, ``"radial"``, ``"sylvester"`` (``layers`` = number of stacked maps), and lifted to
Hⁿ with the ``@lorentz`` suffix.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .constants import NUMERICAL_INVERSE_TOLERANCE, OUTPUT_INIT_SCALE, ROOT_SOLVE_MAX_ITER
from .linear_lu import _no_conditioner, check_dim, householder
from .registry import on_rn, register
from .transform import Compose, Transform

Tensor = torch.Tensor


def _inv_softplus(v: float) -> float:
    return v + math.log(-math.expm1(-v))


def solve_tanh_equation(a: Tensor, c: Tensor, d: Tensor, t: Tensor,
                        one_plus_ac: Optional[Tensor] = None) -> Tensor:
    r"""The root ``s`` of ``g(s) = s + a·tanh(c·s + d) − t`` (broadcast), for ``1 + a·c > 0``.

    ``g′ = 1 + a·c·tanh′ = tanh² + (1 + a·c)·(1 − tanh²) ≥ min(1, 1 + a·c) > 0`` (``one_plus_ac``, if given, is
    used for ``1 + a·c``: exact where ``a·c`` rounds to −1), so the root is unique, and it lies in
    ``[t − |a|, t + |a|]``. Newton steps inside that bracket, with a bisection whenever a step would leave it;
    stops when the step or the bracket is below a few ulps. The root is then made differentiable in
    ``a, c, d, t`` as ``s − (g(s) − g(s)|detached)/g′(s)``: the value is unchanged, and the autograd derivative is
    the implicit-function derivative ``−(∂g/∂θ)/g′`` at the root.

    Example:
        >>> a, c, d = torch.tensor(-0.9), torch.tensor(1.0), torch.tensor(0.3)
        >>> t = torch.linspace(-3, 3, 7)
        >>> s = solve_tanh_equation(a, c, d, t)
        >>> bool(torch.allclose(s + a * torch.tanh(c * s + d), t, atol=1e-6))
        True
    """
    opac = 1 + a * c if one_plus_ac is None else one_plus_ac
    with torch.no_grad():
        a0, c0, d0, t0, q0 = torch.broadcast_tensors(a.detach(), c.detach(), d.detach(), t.detach(), opac.detach())
        eps = torch.finfo(t0.dtype).eps
        lo, hi = t0 - a0.abs(), t0 + a0.abs()
        s = t0 - a0 * torch.tanh(c0 * t0 + d0)  # one fixed-point step: inside the bracket
        for _ in range(ROOT_SOLVE_MAX_ITER):
            th = torch.tanh(c0 * s + d0)
            g = s + a0 * th - t0
            lo = torch.where(g < 0, s, lo)
            hi = torch.where(g > 0, s, hi)
            new = s - g / (th * th + q0 * (1 - th * th))
            new = torch.where((new > lo) & (new < hi), new, (lo + hi) / 2)
            new = torch.where(g == 0, s, new)
            tol = 4 * eps * (1 + new.abs() + a0.abs())
            done = ((new - s).abs() <= tol) | (hi - lo <= tol)
            s = new
            if bool(done.all()):
                break
    if not torch.is_grad_enabled():
        return s
    th = torch.tanh(c * s + d)
    g = s + a * th - t
    return s - (g - g.detach()) / (th * th + opac * (1 - th * th))


class Planar(Transform):
    r"""Planar flow (Rezende & Mohamed 2015, "Variational inference with normalizing flows", §4.1):

    ``y = x + û·tanh(wᵀx + b)``,  ``log|det| = log(1 + tanh′(wᵀx + b)·ûᵀw)``,

    with the invertibility reparameterisation of their appendix A.1,
    ``û = u + (m(wᵀu) − wᵀu)·w/‖w‖²``, ``m(a) = −1 + softplus(a)``, so ``ûᵀw = m(wᵀu) > −1`` and the map is a
    bijection. Inverse (numerical, :attr:`inverse_tolerance`): with ``s = wᵀx + b``, ``wᵀy + b = s + m·tanh(s)``
    is a scalar monotone equation (:func:`solve_tanh_equation`), then ``x = y − û·tanh(s)``.

    Args:
        dim: dimension ``n``.

    Example:
        >>> f = Planar(3).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> x2, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x2, x, atol=1e-10)), bool(torch.allclose(ladj_inv, -ladj))
        (True, True)
    """

    inverse_tolerance = NUMERICAL_INVERSE_TOLERANCE

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.u = nn.Parameter(torch.randn(dim) * OUTPUT_INIT_SCALE)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> tuple[Tensor, Tensor]:
        """``(û, m)`` with ``m = ûᵀw = −1 + softplus(wᵀu)``."""
        wu = self.w @ self.u
        m = F.softplus(wu) - 1
        return self.u + (m - wu) * self.w / (self.w @ self.w), m

    def _ladj(self, th: Tensor) -> Tensor:
        # 1 + m·tanh′ = tanh² + softplus(wᵀu)·(1 − tanh²): positive even where m rounds to −1 (wᵀu ≪ 0)
        sp = F.softplus(self.w @ self.u)
        return torch.log(th * th + sp * (1 - th * th))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, "Planar")
        u, m = self.u_hat()
        th = torch.tanh(x @ self.w + self.b)
        return x + th.unsqueeze(-1) * u, self._ladj(th)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, "Planar")
        u, m = self.u_hat()
        one = torch.ones_like(m)
        s = solve_tanh_equation(m, one, torch.zeros_like(m), y @ self.w + self.b, F.softplus(self.w @ self.u))
        th = torch.tanh(s)
        return y - th.unsqueeze(-1) * u, -self._ladj(th)


class Radial(Transform):
    r"""Radial flow (Rezende & Mohamed 2015, §4.1; Tabak & Turner 2013):

    ``y = x + β·(x − x₀)/(α + r)``, ``r = ‖x − x₀‖``,
    ``log|det| = (n − 1)·log(1 + β/(α + r)) + log(1 + αβ/(α + r)²)``,

    with ``α = softplus(α̂) > 0`` and ``β = −α + softplus(β̂) > −α`` (the invertibility condition ``β ≥ −α``
    enforced by the parameterisation). Inverse in closed form: taking norms, ``ρ = ‖y − x₀‖ = r(α + β + r)/(α + r)``
    is the quadratic ``r² + (α + β − ρ)r − αρ = 0`` with exactly one positive root (evaluated without
    cancellation), then ``x = x₀ + (y − x₀)(α + r)/(α + β + r)``; so :attr:`inverse_tolerance` is ``None``.

    Args:
        dim: dimension ``n``.

    Example:
        >>> f = Radial(3).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> x2, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x2, x)), bool(torch.allclose(ladj_inv, -ladj))
        (True, True)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.x0 = nn.Parameter(torch.randn(dim) * OUTPUT_INIT_SCALE)
        self.alpha_hat = nn.Parameter(torch.zeros(()))
        # β = OUTPUT_INIT_SCALE at initialisation: near the identity, yet x₀ receives a gradient
        self.beta_hat = nn.Parameter(torch.tensor(_inv_softplus(math.log(2) + OUTPUT_INIT_SCALE)))

    def alpha_beta(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(α, β, α + β)``, all but ``β`` positive."""
        alpha = F.softplus(self.alpha_hat)
        alpha_plus_beta = F.softplus(self.beta_hat)
        return alpha, alpha_plus_beta - alpha, alpha_plus_beta

    def _ladj(self, r: Tensor, alpha: Tensor, beta: Tensor, apb: Tensor) -> Tensor:
        return ((self.dim - 1) * (torch.log(apb + r) - torch.log(alpha + r))
                + torch.log1p(alpha * beta / (alpha + r) ** 2))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, "Radial")
        alpha, beta, apb = self.alpha_beta()
        z = x - self.x0
        r = torch.linalg.vector_norm(z, dim=-1)
        return x + (beta / (alpha + r)).unsqueeze(-1) * z, self._ladj(r, alpha, beta, apb)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, "Radial")
        alpha, beta, apb = self.alpha_beta()
        z = y - self.x0
        rho = torch.linalg.vector_norm(z, dim=-1)
        c = apb - rho
        disc = torch.sqrt(c * c + 4 * alpha * rho)
        r = torch.where(c > 0, 2 * alpha * rho / (c + disc), (disc - c) / 2)
        x = self.x0 + ((alpha + r) / (apb + r)).unsqueeze(-1) * z
        return x, -self._ladj(r, alpha, beta, apb)


class Sylvester(Transform):
    r"""Sylvester flow (van den Berg, Hasenclever, Tomczak & Welling 2018, "Sylvester normalizing flows for
    variational inference"):

    ``y = x + Q R·tanh(R̃ Qᵀx + b)``, i.e. ``x + U h(Wᵀx + b)`` with ``U = QR``, ``W = QR̃ᵀ``,
    ``log|det| = log det(I_M + diag(h′) R̃ R) = Σ_i log(1 + h′_i·R_ii·R̃_ii)``,

    ``Q`` (``n×M``, orthonormal columns) and ``R, R̃`` (``M×M`` upper-triangular). Variants: ``"householder"``
    (H-SNF, default: ``Q`` = the first ``M`` columns of a product of ``n`` Householder reflections) and
    ``"triangular"`` (T-SNF: ``Q`` the identity, or the reversal permutation with ``reverse=True``, ``M = n``).
    Invertibility (their Theorem 2: ``R_ii R̃_ii > −1/‖h′‖∞ = −1``) is guaranteed by the parameterisation
    ``R̃_ii = exp(d̃_i)``, ``R_ii = (−1 + softplus(d_i))·exp(−d̃_i)``, so ``R_ii R̃_ii = −1 + softplus(d_i) > −1``.

    Inverse (numerical, :attr:`inverse_tolerance`): in the rotated coordinates ``v = Qᵀx`` the map is
    ``v ↦ v + R tanh(R̃ v + b)``, upper-triangular in its dependence, so it is inverted exactly by
    back-substitution ``i = M, …, 1``, each step the scalar monotone equation
    ``v_i + R_ii tanh(R̃_ii v_i + c_i) = t_i`` (:func:`solve_tanh_equation`); coordinates orthogonal to
    ``Q`` are unchanged.

    Args:
        dim: dimension ``n``.
        rank: ``M ≤ n`` (default ``n``; ``"householder"`` only).
        variant: ``"householder"`` or ``"triangular"``.
        reverse: for ``"triangular"``, use the reversal permutation as ``Q`` (alternate it between layers).

    Example:
        >>> f = Sylvester(4).double()
        >>> x = torch.randn(5, 4, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> x2, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x2, x, atol=1e-10)), bool(torch.allclose(ladj_inv, -ladj))
        (True, True)
    """

    inverse_tolerance = NUMERICAL_INVERSE_TOLERANCE

    def __init__(self, dim: int, rank: Optional[int] = None, variant: str = "householder",
                 reverse: bool = False) -> None:
        super().__init__()
        if variant not in ("householder", "triangular"):
            raise ValueError(f"Sylvester variant must be 'householder' or 'triangular'; got {variant!r}")
        m = dim if rank is None else int(rank)
        if not 1 <= m <= dim or (variant == "triangular" and m != dim):
            raise ValueError(f"Sylvester rank must be in [1, {dim}] (= {dim} for 'triangular'); got {rank}")
        self.dim, self.rank, self.variant, self.reverse = dim, m, variant, reverse
        if variant == "householder":
            self.vectors = nn.Parameter(torch.randn(dim, dim))
        self.register_buffer("mask", torch.triu(torch.ones(m, m), 1))
        self.r_upper = nn.Parameter(torch.randn(m, m) * OUTPUT_INIT_SCALE / math.sqrt(m))
        self.rt_upper = nn.Parameter(torch.randn(m, m) / math.sqrt(m))
        # R_ii R̃_ii = −1 + softplus(d) = OUTPUT_INIT_SCALE at initialisation (near the identity)
        self.d = nn.Parameter(torch.full((m,), _inv_softplus(1 + OUTPUT_INIT_SCALE)))
        self.dt = nn.Parameter(torch.zeros(m))
        self.b = nn.Parameter(torch.zeros(m))

    def triangles(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(R, R̃, 1 + p)`` with ``p_i = R_ii R̃_ii = −1 + softplus(d_i) > −1``."""
        one_plus_p = F.softplus(self.d)
        rt_diag = self.dt.exp()
        r = self.r_upper * self.mask + torch.diag((one_plus_p - 1) / rt_diag)
        rt = self.rt_upper * self.mask + torch.diag(rt_diag)
        return r, rt, one_plus_p

    @staticmethod
    def _ladj(h: Tensor, one_plus_p: Tensor) -> Tensor:
        # Σ log(1 + p·tanh′) with 1 + p·tanh′ = tanh² + (1 + p)·(1 − tanh²): positive even where p rounds to −1
        return torch.log(h * h + one_plus_p * (1 - h * h)).sum(-1)

    def _qt(self, x: Tensor) -> Tensor:
        if self.variant == "householder":
            return householder(x, self.vectors, transpose=True)
        return x.flip(-1) if self.reverse else x

    def _q(self, v: Tensor) -> Tensor:
        if self.variant == "householder":
            return householder(v, self.vectors)
        return v.flip(-1) if self.reverse else v

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, "Sylvester")
        r, rt, p = self.triangles()
        v = self._qt(x)
        vm = v[..., :self.rank]
        h = torch.tanh(vm @ rt.T + self.b)
        v = torch.cat([vm + h @ r.T, v[..., self.rank:]], dim=-1)
        return self._q(v), self._ladj(h, p)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, "Sylvester")
        r, rt, p = self.triangles()
        v = self._qt(y)
        m = self.rank
        zs: list[Tensor] = [v[..., 0]] * m
        hs: list[Tensor] = [v[..., 0]] * m
        for i in reversed(range(m)):
            t, c = v[..., i], self.b[i]
            if i < m - 1:
                z_rest = torch.stack(zs[i + 1:], dim=-1)
                t = t - torch.stack(hs[i + 1:], dim=-1) @ r[i, i + 1:]
                c = c + z_rest @ rt[i, i + 1:]
            zs[i] = solve_tanh_equation(r[i, i], rt[i, i], c, t, p[i])
            hs[i] = torch.tanh(rt[i, i] * zs[i] + c)
        h = torch.stack(hs, dim=-1)
        x = self._q(torch.cat([torch.stack(zs, dim=-1), v[..., m:]], dim=-1))
        return x, -self._ladj(h, p)


@register("planar", on_rn, "planar flows x + û·tanh(wᵀx + b) (Rezende & Mohamed 2015)", lift=True)
def _planar(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    _no_conditioner("planar", conditioner)
    return Compose([Planar(dim, **kw) for _ in range(layers)])


@register("radial", on_rn, "radial flows x + β(x − x₀)/(α + ‖x − x₀‖) (Rezende & Mohamed 2015)",
          lift=True)
def _radial(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    _no_conditioner("radial", conditioner)
    return Compose([Radial(dim, **kw) for _ in range(layers)])


@register("sylvester", on_rn, "Householder Sylvester flows x + QR·tanh(R̃Qᵀx + b) (van den Berg et al. "
          "2018)", lift=True)
def _sylvester(manifold, dim, layers, hidden, conditioner, variant: str = "householder", **kw) -> Transform:
    _no_conditioner("sylvester", conditioner)
    return Compose([Sylvester(dim, variant=variant, reverse=bool(i % 2), **kw) for i in range(layers)])
