r"""One coupling skeleton (:class:`Coupling`) and the named coupling layers; what happens to the transformed half
lives in :mod:`flows.halves` (affine: NC/TC, additive) and :mod:`flows.hyperboloid_half` (wrapped hyperboloid: WHC).

Partition the tangent coordinates ``w`` into a conditioning part ``w₁`` and a transformed part ``w₂`` (``l``
coordinates); networks of ``w₁`` give the parameters of a bijection of ``w₂``; ``y₁ = w₁``. Layers alternate
the parity of the partition (first / second half of the coordinates), so every coordinate is transformed, in any dimension
``n ≥ 2`` (odd ones included). References: Dinh et al. 2017 (RealNVP); Bose et al. 2020 (TC, WHC).
"""

from __future__ import annotations

from typing import Optional

import torch

from manifolds.base import ManifoldOps
from manifolds.lorentz import Lorentz

from .conditioners import make_conditioner
from .constants import DEFAULT_HIDDEN
from .halves import AdditiveHalf, AffineHalf, CouplingHalf, bounded_log_scale
from .hyperboloid_half import HyperboloidHalf
from .transform import TangentSpaceTransform, Transform

Tensor = torch.Tensor

__all__ = ["AdditiveCoupling", "AdditiveHalf", "AffineCoupling", "AffineHalf", "Coupling", "CouplingHalf",
           "HyperboloidHalf", "TangentCoupling", "WrappedHyperboloidCoupling", "bounded_log_scale"]


class Coupling(Transform):
    r"""The coupling skeleton on ℝⁿ: ``y₁ = w₁``, ``y₂ = h(w₂; θ(w₁, c))``, ``log|det| = log|det ∂h/∂w₂|``.

    Args:
        dim: ``n ≥ 2``.
        half: the bijection :class:`CouplingHalf` applied to ``w₂``.
        parity: 0 conditions on the first ``ceil(n/2)`` coordinates and transforms the last ``floor(n/2)``;
            1 conditions on the last ``floor(n/2)`` and transforms the first ``ceil(n/2)``.
        conditioner: ``"mlp"``, ``"gcn"`` or ``"gat"`` (graph conditioners take ``context=edge_index``).
        hidden: conditioner width.
        context_features: size of a context vector for MLP conditioners (conditional flows).
        manifold: the :class:`~manifolds.Euclidean` it acts on (its ``validate`` / ``dim`` settings are kept);
            a new ``Euclidean()`` by default.
    """

    def __init__(self, dim: int, half: CouplingHalf, parity: int = 0, conditioner: str = "mlp",
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0, *,
                 manifold: Optional[ManifoldOps] = None) -> None:
        super().__init__(manifold)
        if not self.manifold.coords_are_points:
            raise ValueError(f"a coupling layer acts on ℝⁿ; got {self.manifold.name}. On the hyperboloid use "
                             "TangentCoupling ('tc') or WrappedHyperboloidCoupling ('whc')")
        if int(dim) != dim or dim < 2:
            raise ValueError(f"a coupling layer needs dimension n >= 2 (it splits the coordinates in two); got {dim}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity}")
        # contiguous halves (normflows' "channel" layout): the first ceil(n/2) coordinates and the last floor(n/2);
        # parity 0 conditions on the first half, parity 1 on the second. The halves are views (``split``) that the
        # conditioner's first matrix product reads in place, and one ``cat`` merges them, in both passes.
        self._sizes = (dim - dim // 2, dim // 2)
        idx = torch.arange(dim)
        first, second = idx[:self._sizes[0]], idx[self._sizes[0]:]
        self.register_buffer("cond_idx", first if parity == 0 else second, persistent=False)
        self.register_buffer("trans_idx", second if parity == 0 else first, persistent=False)
        self.dim = dim
        self.parity = parity
        self.bijection = half
        self.net = make_conditioner(conditioner, len(self.cond_idx), half.n_params * len(self.trans_idx), hidden,
                                    context_features)

    def _split(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(w₁, w₂)``: the conditioning and the transformed coordinates (views of ``w``)."""
        a, b = w.split(self._sizes, dim=-1)
        return (a, b) if self.parity == 0 else (b, a)

    def _merge(self, w1: Tensor, y2: Tensor) -> Tensor:
        """The coordinates back in their places: ``w₁`` unchanged, ``y₂`` where ``w₂`` was."""
        return torch.cat((w1, y2) if self.parity == 0 else (y2, w1), dim=-1)

    def _check(self, w: Tensor) -> None:
        if w.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} coordinates in the last dimension; "
                             f"got shape {tuple(w.shape)}")
        weight = next(self.net.parameters(), None)
        if weight is not None and weight.dtype != w.dtype:  # metadata only: no value is read
            raise ValueError(f"{type(self).__name__} got {w.dtype} coordinates but its parameters are {weight.dtype}: "
                             f"convert the input (x.to({weight.dtype})) or the flow (flow.to({w.dtype}))")
        if self.manifold.validate:  # Euclidean(validate=True): non-finite input is a ValueError here
            self.manifold.validate_point(w, "x")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        x1, x2 = self._split(x)
        y2, ladj = self.bijection(x2, self.net(x1, context))
        return self._merge(x1, y2), ladj

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        y1, y2 = self._split(y)
        x2, ladj = self.bijection.inverse(y2, self.net(y1, context))
        return self._merge(y1, x2), ladj

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
                 context_features: int = 0, *, manifold: Optional[ManifoldOps] = None) -> None:
        super().__init__(dim, AffineHalf(), parity, conditioner, hidden, context_features, manifold=manifold)


class AdditiveCoupling(Coupling):
    r"""Additive coupling on ℝⁿ (NICE, Dinh, Krueger, Bengio 2015): ``y₁ = w₁``, ``y₂ = w₂ + t(w₁)``,
    ``log|det| = 0``. NICE makes the whole flow non-volume-preserving with a diagonal scaling as its last layer
    (the registered ``"additive"`` flow does).

    Example:
        >>> f = AdditiveCoupling(3)
        >>> x = torch.randn(5, 3)
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-6), bool((ladj == 0).all())
        (True, True)
    """

    def __init__(self, dim: int, parity: int = 0, conditioner: str = "mlp", hidden: int = DEFAULT_HIDDEN,
                 context_features: int = 0, *, manifold: Optional[ManifoldOps] = None) -> None:
        super().__init__(dim, AdditiveHalf(), parity, conditioner, hidden, context_features, manifold=manifold)


def _need_lorentz(manifold: ManifoldOps, what: str) -> None:
    if not isinstance(manifold, Lorentz):
        raise ValueError(f"{what} acts on the Lorentz manifold; got {manifold.name}. On ℝⁿ use AffineCoupling ('nc').")


def _need_global_chart(manifold: ManifoldOps, what: str) -> None:
    if not manifold.exp0_is_diffeomorphism or manifold.coords_are_points:
        raise ValueError(f"{what} lifts a coupling of ℝⁿ through exp_o, which needs exp_o to be a diffeomorphism of "
                         f"ℝⁿ onto the manifold (infinite injectivity radius, not compact); {manifold.name} is "
                         f"{'ℝⁿ itself: use AffineCoupling (nc)' if manifold.coords_are_points else 'not such a manifold'}")


class TangentCoupling(TangentSpaceTransform):
    r"""Tangent coupling (TC) on :math:`H^n_k` (or any manifold whose ``exp_o`` is a diffeomorphism of ℝⁿ onto it):
    ``f = exp_o ∘ g ∘ log_o`` with ``g`` an affine coupling of the
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
        _need_global_chart(manifold, "TangentCoupling")
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
