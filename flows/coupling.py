r"""One coupling skeleton, and what happens to the transformed half: affine (NC/TC) or wrapped hyperboloid (WHC).

Partition the tangent coordinates ``w`` into a conditioning part ``w₁`` and a transformed part ``w₂`` (``l``
coordinates); networks of ``w₁`` give the parameters of a bijection of ``w₂``; ``y₁ = w₁``. Layers alternate
the parity of the partition (first / second half of the coordinates), so every coordinate is transformed, in any dimension
``n ≥ 2`` (odd ones included). References: Dinh et al. 2017 (RealNVP); Bose et al. 2020 (TC, WHC).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from manifolds import lorentz_math as lm
from manifolds.base import ManifoldOps
from manifolds.boost import bc_backward, bc_forward, boosted_logmap0, log_sinhc_nograd, log_sinhc_prime
from manifolds.constants import INTERNAL_DTYPE

from .conditioners import make_conditioner
from .conditioners import tanh as _tanh
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
        return _AffineHalfMap.apply(w2, params, False)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return _AffineHalfMap.apply(y2, params, True)


class _AffineHalfMap(torch.autograd.Function):
    r""":class:`AffineHalf` as one autograd node (same forward operations, hand-written backward).

    With ``s = B·tanh(ŝ/B)`` (``ds/dŝ = 1 - tanh²``): forward ``y = w·e^s + t``: ``ḡ_w = ḡ_y·e^s``,
    ``ḡ_t = ḡ_y``, ``ḡ_s = ḡ_y·(w·e^s) + ḡ_l``; inverse ``x = (y - t)·e^{-s}``: ``ḡ_y = ḡ_x·e^{-s}``,
    ``ḡ_t = -ḡ_y``, ``ḡ_s = -ḡ_x·x - ḡ_l``.
    """

    @staticmethod
    def forward(ctx, w: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw, t = params.chunk(2, dim=-1)
        th = torch.tanh(raw / LOG_SCALE_BOUND)
        s = LOG_SCALE_BOUND * th
        if inverse:
            es = torch.exp(-s)
            out = (w - t) * es
            ladj = -s.sum(-1)
            keep = out
        else:
            es = torch.exp(s)
            keep = w * es
            out = keep + t
            ladj = s.sum(-1)
        ctx.save_for_backward(th, es, keep)
        ctx.inverse = inverse
        return out, ladj

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gl: Tensor):
        th, es, keep = ctx.saved_tensors
        gw = gy * es
        gl = gl.unsqueeze(-1)
        if ctx.inverse:
            gs = -(gy * keep) - gl
            gt = -gw
        else:
            gs = gy * keep + gl
            gt = gy
        gp = torch.cat([gs * (1 - th * th), gt], dim=-1) if ctx.needs_input_grad[1] else None
        return (gw if ctx.needs_input_grad[0] else None), gp, None


class AdditiveHalf(CouplingHalf):
    r"""``y₂ = w₂ + t``, ``log|det| = 0`` (NICE, Dinh, Krueger, Bengio 2015, arXiv 1410.8516): volume-preserving.

    Example:
        >>> AdditiveHalf()(torch.zeros(2, 3), torch.ones(2, 3))
        (tensor([[1., 1., 1.],
                [1., 1., 1.]]), tensor([0., 0.]))
    """

    n_params = 1

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return w2 + params, w2.new_zeros(w2.shape[:-1])

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y2 - params, y2.new_zeros(y2.shape[:-1])


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

    For ``l = 1`` (every half of a 2-D latent) :math:`H^1_k` is one geodesic, on which ``exp_o`` and ``log_o`` are
    arclength coordinates and the boost ``L_t`` is a translation by the signed distance ``τ = sqrt(k)·asinh(t̂/
    sqrt(k))`` of ``t`` from ``o``: ``y₂ = w₂·e^s + τ``, ``log|det| = s`` (the ``ℓ`` terms have exponent ``l-1 = 0``).
    That closed form is used (exact, well conditioned in the input dtype, no overflow inside the map).

    Example:
        >>> from manifolds import Lorentz
        >>> half, w, p = HyperboloidHalf(Lorentz(k=2.0)), torch.tensor([[0.5]]), torch.tensor([[0.1, 3.0]])
        >>> y, ladj = half(w, p)
        >>> s, tau = bounded_log_scale(p[:, :1]), 2.0 ** 0.5 * torch.asinh(p[:, 1:] / 2.0 ** 0.5)
        >>> torch.allclose(y, w * s.exp() + tau) and torch.allclose(ladj, s[:, 0])
        True
    """

    def __init__(self, manifold: ManifoldOps) -> None:
        super().__init__()
        if not hasattr(manifold, "k"):
            raise ValueError("the wrapped hyperboloid coupling needs a Lorentz manifold (it uses its curvature k)")
        self.manifold = manifold

    def _map(self, w: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        k = self.manifold.k
        if w.size(-1) == 1:
            return self._map_line(w, params, k, sign)
        if not (k.requires_grad and torch.is_grad_enabled()):
            return _HyperboloidHalfMap.apply(w, params, k.detach().to(INTERNAL_DTYPE), sign < 0)
        return self._map_autograd(w, params, sign)

    @staticmethod
    def _map_line(w: Tensor, params: Tensor, k: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """``l = 1``: ``log_o ∘ L_t^{±1} ∘ exp_o`` on the geodesic :math:`H^1_k` is ``v ↦ v ± τ``,
        ``τ = sqrt(k)·asinh(t̂/sqrt(k))``; so the half is the affine one with translation ``τ``."""
        raw, t_hat = params.chunk(2, dim=-1)
        sk = k.to(params.dtype).sqrt()
        tau = sk * lm.asinh(t_hat / sk)
        return _AffineHalfMap.apply(w, torch.cat([raw, tau], dim=-1), sign < 0)

    def _map_autograd(self, w: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """The reference form of :meth:`_map`, differentiated by autograd (used when ``k`` is learnable)."""
        dtype = w.dtype
        raw, t_hat = params.to(INTERNAL_DTYPE).chunk(2, dim=-1)
        s = bounded_log_scale(raw)
        k = self.manifold.k.to(INTERNAL_DTYPE)
        w = w.to(INTERNAL_DTYPE)
        if sign > 0:  # v = w ⊙ e^s, y = log_o(L_t(exp_o(v)))
            y, z = boosted_logmap0(w * torch.exp(s), t_hat, k, inverse=False)
            ell = lm.log_sinhc(z)  # ℓ(||v||), ℓ(||y||) in one call
            ladj = s.sum(-1) + (w.size(-1) - 1) * (ell[..., 0] - ell[..., 1])
        else:  # v = log_o(L_t⁻¹(exp_o(w))), y = v ⊙ e^{-s}
            v, z = boosted_logmap0(w, t_hat, k, inverse=True)
            y = v * torch.exp(-s)
            ell = lm.log_sinhc(z)  # ℓ(||w||), ℓ(||v||)
            ladj = (w.size(-1) - 1) * (ell[..., 0] - ell[..., 1]) - s.sum(-1)
        return y.to(dtype), ladj.to(dtype)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(w2, params, +1.0)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(y2, params, -1.0)


class _HyperboloidHalfMap(torch.autograd.Function):
    r"""The whole transformed half of :class:`HyperboloidHalf` (fixed ``k``) as one autograd node: the bounded
    log-scale, ``v = w ⊙ e^{±s}``, :func:`bc_forward`, the ``ℓ`` terms of the log-det and the float64 casts.

    ``forward(w, params, k, inverse)`` returns ``(y, ladj)`` in ``w``'s dtype, computed in float64 with the
    formulas of :meth:`HyperboloidHalf._map_autograd`. Backward (``s = B·tanh(ŝ/B)``, ``ds/dŝ = 1 - tanh²``,
    ``ℓ' = coth z - 1/z``): the ladj's gradient ``ḡ_l`` enters :func:`bc_backward` as
    ``ḡ_z = (l-1)·ḡ_l·ℓ'(z)``, ``ḡ_a = -(l-1)·ḡ_l·ℓ'(a)``; density direction (``inverse``, ``y = v·e^{-s}``):
    ``ḡ_v = ḡ_y·e^{-s}``, ``ḡ_s = -ḡ_y·y - ḡ_l``; sampling direction (``u = w·e^s``): ``ḡ_w = ḡ_u·e^s``,
    ``ḡ_s = ḡ_u·u + ḡ_l``.
    """

    @staticmethod
    def forward(ctx, w: Tensor, params: Tensor, k: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        F = INTERNAL_DTYPE
        raw, t_hat = params.chunk(2, dim=-1)
        # the log-scale s = B·tanh(ŝ/B) in the conditioner's dtype (it is a network output; the map and its
        # log-det then use the same s in float64, so round trips and log-dets stay exact), with the fast tanh
        th = _tanh(raw / LOG_SCALE_BOUND).to(F)
        t_hat = t_hat.to(F)
        s = LOG_SCALE_BOUND * th
        w64 = w.to(F)
        l1 = w.size(-1) - 1
        if inverse:  # v = log_o(L_t⁻¹(exp_o(w))), y = v ⊙ e^{-s}
            v, z, a, saved = bc_forward(w64, t_hat, k, True)
            es = torch.exp(-s)
            y = v * es
            ell = log_sinhc_nograd(torch.cat([z, a], dim=-1))
            ladj = l1 * (ell[..., 0] - ell[..., 1]) - s.sum(-1)
            keep = y
        else:  # v = w ⊙ e^s, y = log_o(L_t(exp_o(v)))
            es = torch.exp(s)
            u = w64 * es
            y, z, a, saved = bc_forward(u, t_hat, k, False)
            ell = log_sinhc_nograd(torch.cat([z, a], dim=-1))
            ladj = s.sum(-1) + l1 * (ell[..., 0] - ell[..., 1])
            keep = u
        ctx.save_for_backward(k, th, es, keep, a, *saved)
        ctx.inverse = inverse
        ctx.l1 = l1
        ctx.dtypes = (w.dtype, params.dtype)
        return y.to(w.dtype), ladj.to(w.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gl: Tensor):
        k, th, es, keep, a, *saved = ctx.saved_tensors
        saved = tuple(saved)
        F = INTERNAL_DTYPE
        gy = gy.to(F)
        gl = gl.to(F).unsqueeze(-1)
        z = saved[3]
        dell = (ctx.l1 * gl) * log_sinhc_prime(torch.cat([z, a], dim=-1))
        gz, ga = dell[..., :1], -dell[..., 1:]
        need_w, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.inverse:
            gw, gt = bc_backward(saved, k, True, gy * es, gz, ga, need_w, need_p)
            gs = -(gy * keep) - gl
        else:
            gu, gt = bc_backward(saved, k, False, gy, gz, ga, need_w or need_p, need_p)
            gw = gu * es if need_w else None
            gs = gu * keep + gl
        gp = torch.cat([gs * (1 - th * th), gt], dim=-1).to(ctx.dtypes[1]) if need_p else None
        return (gw.to(ctx.dtypes[0]) if need_w else None), gp, None, None


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
        if self.manifold.name != "Euclidean":
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
