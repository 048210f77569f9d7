r"""One coupling skeleton, and what happens to the transformed half: affine (NC/TC) or wrapped hyperboloid (WHC).

Partition the tangent coordinates ``w`` into a conditioning part ``w₁`` and a transformed part ``w₂`` (``l``
coordinates); networks of ``w₁`` give the parameters of a bijection of ``w₂``; ``y₁ = w₁``. Layers alternate
the parity of the partition (even / odd coordinates), so every coordinate is transformed, in any dimension
``n ≥ 2`` (odd ones included). References: Dinh et al. 2017 (RealNVP); Bose et al. 2020 (TC, WHC).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from manifolds import lorentz_math as lm
from manifolds.base import ManifoldOps
from manifolds.constants import INTERNAL_DTYPE

from .conditioners import make_conditioner
from .constants import DEFAULT_HIDDEN, LOG_SCALE_BOUND
from .transform import TangentSpaceTransform, Transform

Tensor = torch.Tensor


def bounded_log_scale(raw: Tensor) -> Tensor:
    r"""``s = B·tanh(ŝ/B)``: a smooth bound ``|s| < B`` (``B`` = :data:`~flows.constants.LOG_SCALE_BOUND`),
    the identity near 0; not a clamp (strictly increasing, so the coupling stays a bijection)."""
    return LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)


class CouplingHalf(nn.Module):
    """A bijection of the transformed half ``w₂ ∈ ℝˡ`` given per-coordinate parameters (``n_params`` per coordinate)."""

    n_params: int = 2

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class AffineHalf(CouplingHalf):
    r"""``y₂ = w₂ ⊙ exp(s) + t``, ``log|det| = Σ s`` (RealNVP)."""

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raw, t = params.chunk(2, dim=-1)
        s = bounded_log_scale(raw)
        return w2 * torch.exp(s) + t, s.sum(-1)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raw, t = params.chunk(2, dim=-1)
        s = bounded_log_scale(raw)
        return (y2 - t) * torch.exp(-s), -s.sum(-1)


class HyperboloidHalf(CouplingHalf):
    r"""Wrapped hyperboloid coupling of the transformed half, on the ``l``-dimensional sub-hyperboloid
    :math:`H^l_k` (``MATH.md`` §4):

    ``v = w₂ ⊙ exp(s)``,  ``y₂ = log_o(exp_t(PT_{o→t}(v)))`` with ``t = (sqrt(||t̂||² + k), t̂)`` and
    ``t̂ ∈ ℝˡ`` a network output; ``log|det| = Σ s + (l-1)·ℓ(||v||) - (l-1)·ℓ(||y₂||)`` (exponent ``l-1``: the
    paper's ``l`` is an erratum). ``exp_t ∘ PT_{o→t} = L_t ∘ exp_o`` with the Lorentz boost ``L_t``
    (:func:`manifolds.lorentz_math.translate`); transport contributes 0.

    The map is evaluated in float64 and returned in the input dtype: the boost cancels large coordinates
    when ``y₂`` lands near the origin, and ``||v||`` may exceed float32's ``cosh`` range (88) inside the map
    even when ``y₂`` does not.
    """

    def __init__(self, manifold: ManifoldOps) -> None:
        super().__init__()
        if not hasattr(manifold, "k"):
            raise ValueError("the wrapped hyperboloid coupling needs a Lorentz manifold (it uses its curvature k)")
        self.manifold = manifold

    def _map(self, w: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        dtype = w.dtype
        raw, t_hat = params.to(INTERNAL_DTYPE).chunk(2, dim=-1)
        s = bounded_log_scale(raw)
        k = self.manifold.k.to(INTERNAL_DTYPE)
        l = w.size(-1)
        t = torch.cat([torch.zeros_like(t_hat[..., :1]), t_hat], dim=-1)  # lifted by translate's projx
        ell = lambda v: lm.expmap_logdet(torch.linalg.vector_norm(v, dim=-1), k, l)  # noqa: E731
        if sign > 0:
            v = w.to(INTERNAL_DTYPE) * torch.exp(s)
            y = lm.logmap0_spatial(lm.translate(t, lm.expmap0_spatial(v, k), k), k)
            ladj = s.sum(-1) + ell(v) - ell(y)
        else:
            v = lm.logmap0_spatial(lm.translate(t, lm.expmap0_spatial(w.to(INTERNAL_DTYPE), k), k, inverse=True), k)
            y = v * torch.exp(-s)
            ladj = -s.sum(-1) - ell(v) + ell(w.to(INTERNAL_DTYPE))
        return y.to(dtype), ladj.to(dtype)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(w2, params, +1.0)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(y2, params, -1.0)


class Coupling(Transform):
    r"""The coupling skeleton on ℝⁿ: ``y₁ = w₁``, ``y₂ = h(w₂; θ(w₁, c))``, ``log|det| = log|det ∂h/∂w₂|``.

    Args:
        dim: ``n ≥ 2``.
        half: the bijection :class:`CouplingHalf` applied to ``w₂``.
        parity: 0 conditions on the even coordinates and transforms the odd ones; 1 the reverse.
        conditioner: ``"mlp"``, ``"gcn"`` or ``"gat"`` (graph conditioners take ``context=edge_index``).
        hidden: conditioner width.
        context_features: size of a context vector for MLP conditioners (conditional flows).
    """

    def __init__(self, dim: int, half: CouplingHalf, parity: int = 0, conditioner: str = "mlp",
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0) -> None:
        super().__init__()
        if int(dim) != dim or dim < 2:
            raise ValueError(f"a coupling layer needs dimension n >= 2 (it splits the coordinates in two); got {dim}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity}")
        idx = torch.arange(dim)
        self.register_buffer("cond_idx", idx[idx % 2 == parity], persistent=False)
        self.register_buffer("trans_idx", idx[idx % 2 != parity], persistent=False)
        self.dim = dim
        self.bijection = half
        self.net = make_conditioner(conditioner, len(self.cond_idx), half.n_params * len(self.trans_idx), hidden,
                                    context_features)

    def _params(self, w: Tensor, context: Optional[Tensor]) -> Tensor:
        return self.net(w.index_select(-1, self.cond_idx), context)

    def _check(self, w: Tensor) -> None:
        if w.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} coordinates in the last dimension; "
                             f"got shape {tuple(w.shape)}")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        y2, ladj = self.bijection(x.index_select(-1, self.trans_idx), self._params(x, context))
        return x.index_copy(-1, self.trans_idx, y2), ladj

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        x2, ladj = self.bijection.inverse(y.index_select(-1, self.trans_idx), self._params(y, context))
        return y.index_copy(-1, self.trans_idx, x2), ladj

    def extra_repr(self) -> str:
        return f"dim={self.dim}, transformed={self.trans_idx.tolist()}"


class AffineCoupling(Coupling):
    r"""Affine coupling on ℝⁿ (NC, RealNVP): ``y₂ = w₂ ⊙ exp(s(w₁)) + t(w₁)``, ``log|det| = Σ s(w₁)``, with the
    smooth bound ``|s| < 4`` (:func:`bounded_log_scale`).

    Example:
        >>> f = AffineCoupling(3)
        >>> x = torch.randn(5, 3)
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(self, dim: int, parity: int = 0, conditioner: str = "mlp", hidden: int = DEFAULT_HIDDEN,
                 context_features: int = 0) -> None:
        super().__init__(dim, AffineHalf(), parity, conditioner, hidden, context_features)


def _need_lorentz(manifold: ManifoldOps, what: str) -> None:
    if manifold.name != "Lorentz":
        raise ValueError(f"{what} acts on the Lorentz manifold; got {manifold.name}. On ℝⁿ use AffineCoupling ('nc').")


class TangentCoupling(TangentSpaceTransform):
    r"""Tangent coupling (TC) on :math:`H^n_k`: ``f = exp_o ∘ g ∘ log_o`` with ``g`` an affine coupling of the
    tangent coordinates ``w = log_o(x)``;
    ``log|det| = Σ s(w₁) + (n-1)·ℓ(||g(w)||) - (n-1)·ℓ(||w||)``. Stacks fuse into one ``log_o``/``exp_o`` pair
    (:class:`~flows.transform.Compose`).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=2.0)
        >>> f = TangentCoupling(M, 3)
        >>> x = M.expmap0_spatial(torch.randn(5, 3))
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(self, manifold: ManifoldOps, dim: int, parity: int = 0, conditioner: str = "mlp",
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0) -> None:
        _need_lorentz(manifold, "TangentCoupling")
        super().__init__(manifold, AffineCoupling(dim, parity, conditioner, hidden, context_features))


class WrappedHyperboloidCoupling(TangentSpaceTransform):
    r"""Wrapped hyperboloid coupling (WHC) on :math:`H^n_k` (Bose et al. 2020, with ``MATH.md``'s errata): on
    ``w = log_o(x)``, ``v = w₂ ⊙ exp(s(w₁))``, ``y₂ = log_o(exp_t(PT_{o→t}(v)))`` on the sub-hyperboloid
    :math:`H^l_k` with ``t = t(w₁)``, ``y₁ = w₁``, then ``exp_o``:

    ``log|det| = Σ s + (l-1)·ℓ(||v||) - (l-1)·ℓ(||y₂||) + (n-1)·ℓ(||y||) - (n-1)·ℓ(||w||)``.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz(k=1.0)
        >>> f = WrappedHyperboloidCoupling(M, 2)
        >>> x = M.expmap0_spatial(torch.randn(5, 2))
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(self, manifold: ManifoldOps, dim: int, parity: int = 0, conditioner: str = "mlp",
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0) -> None:
        _need_lorentz(manifold, "WrappedHyperboloidCoupling")
        super().__init__(manifold, Coupling(dim, HyperboloidHalf(manifold), parity, conditioner, hidden,
                                            context_features))
