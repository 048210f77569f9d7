"""The Lorentz (hyperboloid) manifold as a thin ``geoopt.Manifold`` over :mod:`manifolds.lorentz_math`."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import geoopt
import torch

from . import lorentz_math as lm
from .base import ManifoldOps
from .constants import K_RANGE, MANIFOLD_CHECK_RTOL

Tensor = torch.Tensor


def _inner_bounds(k_range: tuple[float, float], dtype: torch.dtype) -> tuple[float, float]:
    """The smallest and largest values of ``dtype`` strictly inside the open interval ``k_range``."""
    lo, hi = (torch.tensor(b, dtype=torch.float64).to(dtype) for b in k_range)
    if float(lo) <= k_range[0]:
        lo = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
    if float(hi) >= k_range[1]:
        hi = torch.nextafter(hi, torch.tensor(-math.inf, dtype=dtype))
    return float(lo), float(hi)


class Lorentz(ManifoldOps, geoopt.Manifold):
    r"""Hyperboloid :math:`H^n_k = \{x ∈ ℝ^{n+1} : <x,x>_L = -k,\ x_0 > 0\}` of curvature ``-1/k``.

    Args:
        k: the curvature parameter ``k > 0`` (curvature ``-1/k``; the paper's radius is ``R = sqrt(k)``).
        learnable: make ``k`` a trainable parameter (:attr:`k_raw`, see below).
        k_range: the open interval ``(k_min, k_max)`` that ``k`` lives in (default
            :data:`manifolds.constants.K_RANGE` ``= (1e-3, 1e3)``).
        validate: check every input (finite, right size, on the manifold / tangent space) and raise a
            ``ValueError`` that says what is wrong; off by default for speed.
        dim: the intrinsic dimension ``n``, if you want sizes checked (points have ``n + 1`` coordinates).

    **Curvature parametrisation.** ``k`` is stored as an unconstrained parameter ``θ`` (:attr:`k_raw`) with

    .. math:: \log k = c + h \tanh(θ / h), \qquad c = \tfrac12(\log k_{max} + \log k_{min}),\quad
              h = \tfrac12(\log k_{max} - \log k_{min}),

    so every finite ``θ`` gives ``k`` strictly inside ``k_range`` (a smooth bijection ℝ → range; in every dtype,
    :attr:`k` also keeps the rounding of ``exp`` inside), the constructor and :meth:`set_k` accept the same
    values (every finite ``k`` with ``k_min < k < k_max``), and
    near the middle of the range (``k = 1`` for the default) a step in ``θ`` moves ``log k`` as much as a step in
    ``log k`` itself (``d log k / dθ = 1`` at ``θ = 0``). Loading a state_dict whose ``k_raw`` is not finite, or a legacy ``log_k``
    entry outside the range, raises a ``ValueError``.

    Works with ``geoopt.ManifoldParameter`` and ``geoopt.optim.RiemannianAdam``. Operations at the origin are
    exact to working precision up to distance ≈ 88·sqrt(k) in float32; operations at other base points are
    computed in float64 internally (see :mod:`manifolds.lorentz_math` and the README's numerical envelope).

    Example:
        >>> M = Lorentz(k=2.0)
        >>> x = M.expmap0(torch.tensor([0.0, 1.0, 2.0]))
        >>> bool(M.check_point_on_manifold(x))
        True
        >>> torch.allclose(M.logmap0(x), torch.tensor([0.0, 1.0, 2.0]))
        True
    """

    name = "Lorentz"
    curvature_sign = -1
    ndim = 1
    reversible = False
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, k: float | Tensor = 1.0, learnable: bool = False, *, validate: bool = False,
                 dim: int | None = None, k_range: tuple[float, float] = K_RANGE) -> None:
        super().__init__()
        if torch.is_tensor(k) and k.device.type == "meta":
            raise ValueError("Lorentz(k=...): k is a meta tensor, which has no value; pass k as a number")
        # checked on the host (also when built under ``with torch.device("meta")``: k is a number, the parameter
        # below follows the device context)
        k_t = torch.as_tensor(k, dtype=torch.get_default_dtype() if not torch.is_tensor(k) else None,
                              device=k.device if torch.is_tensor(k) else "cpu")
        if not torch.is_floating_point(k_t):
            k_t = k_t.to(torch.get_default_dtype())
        if k_t.dim() != 0 or not bool(torch.isfinite(k_t)) or float(k_t) <= 0:
            raise ValueError(
                f"Lorentz curvature parameter k must be a finite positive scalar (curvature is -1/k); got {k!r}. "
                f"For the paper's radius R use k = R**2."
            )
        lo, hi = (float(b) for b in k_range)
        if not (0 < lo < hi < math.inf):
            raise ValueError(f"k_range must be (k_min, k_max) with 0 < k_min < k_max < inf; got {k_range!r}")
        if dim is not None and (int(dim) != dim or dim < 1):
            raise ValueError(f"dim (the intrinsic dimension n) must be a positive integer; got {dim!r}")
        self.k_range = (lo, hi)
        self._log_k_center = 0.5 * (math.log(hi) + math.log(lo))
        self._log_k_half = 0.5 * (math.log(hi) - math.log(lo))
        #: per dtype, its values nearest the bounds inside k_range (no tensor work in ``k``: compiled steps read it)
        self._k_bounds = {dt: _inner_bounds(self.k_range, dt)
                          for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
        value = float(k) if not torch.is_tensor(k) else float(k_t)  # as given: set_k(k) accepts the same values
        self.k_raw = torch.nn.Parameter(torch.tensor(self._raw_of(value), dtype=k_t.dtype),
                                        requires_grad=learnable)
        self.validate = validate
        self.dim = dim

    # -- curvature -----------------------------------------------------------------------------------------
    def _raw_of(self, k: float) -> float:
        """``θ`` with ``k(θ) = k`` (see the class); a ``ValueError`` when ``k`` is outside ``k_range``."""
        lo, hi = self.k_range
        if not (math.isfinite(k) and lo < k < hi):
            raise ValueError(
                f"Lorentz curvature parameter k = {k!r} is outside its range (k_min, k_max) = ({lo:g}, {hi:g}); "
                f"pass k_range=(k_min, k_max) to Lorentz to allow it (curvature -1/k, radius sqrt(k))"
            )
        z = (math.log(k) - self._log_k_center) / self._log_k_half
        # a k within rounding of a bound (999.9999999999999 in (1e-3, 1e3)) gives |z| = 1 in float64: take the
        # last z below 1, whose k(θ) is that bound's neighbour inside the range (the ``k`` property keeps it there)
        return self._log_k_half * math.atanh(max(-math.nextafter(1.0, 0.0), min(z, math.nextafter(1.0, 0.0))))

    @property
    def log_k(self) -> Tensor:
        """``log k = c + h·tanh(θ/h)`` (differentiable in :attr:`k_raw` when learnable; see the class)."""
        return self._log_k_center + self._log_k_half * torch.tanh(self.k_raw / self._log_k_half)

    @property
    def k(self) -> Tensor:
        """The curvature parameter ``k = exp(log k)``, strictly inside ``k_range`` in its dtype (differentiable when
        learnable). ``exp`` of a rounded ``log k`` can land on or just past a bound where ``tanh`` saturates (float32:
        1000.0001 and 0.00099999993); those roundings are pulled back to the nearest value of the dtype inside the
        range, where ``dk/dθ`` is already 0 to working precision."""
        log_k = self.log_k
        lo, hi = self._k_bounds[log_k.dtype]
        return log_k.exp().clamp(lo, hi)

    @property
    def curvature_parameter(self) -> torch.nn.Parameter:
        """The trainable parameter behind ``k`` (:attr:`k_raw`): toggle its ``requires_grad`` to train or freeze
        ``k``, and put it in the optimiser."""
        return self.k_raw

    @property
    def learnable(self) -> bool:
        return self.k_raw.requires_grad

    @property
    def learnable_curvature(self) -> bool:
        """Whether ``k`` is trained (:attr:`curvature_parameter`)."""
        return self.learnable

    def curvature(self) -> Tensor:
        """Sectional curvature ``-1/k``."""
        return -1.0 / self.k

    def embedding_terms(self, x: Tensor, probe: Optional[Tensor] = None):
        r"""The normal ``ν = x/√k`` (``⟨ν, ν⟩_L = -1``): the pair ``(-Gx/k, x)``, so ``div_g V = tr J + ⟨x, Jx⟩_L / k``
        (``n + 2`` vector-Jacobian products); the probe ``ε = PT_{o→x}(0, probe[..., 1:])`` and its dual ``Gε``
        (:meth:`ManifoldOps.embedding_terms`, :func:`~manifolds.base.embedded_divergence`; derivation in
        :mod:`flows.rfm`)."""
        k = self.k.to(x.dtype)
        dual = torch.cat([-x[..., :1], x[..., 1:]], dim=-1)  # G x
        if probe is None:
            return [(-dual / k, x)], None, None
        eps = lm.transp0(x, torch.cat([torch.zeros_like(probe[..., :1]), probe[..., 1:]], dim=-1), k)
        return [(-dual / k, x)], eps, torch.cat([-eps[..., :1], eps[..., 1:]], dim=-1)

    def set_k(self, value: float) -> None:
        """Set ``k`` in place (e.g. from a curvature schedule); ``value`` must lie in ``k_range``."""
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"k must be finite and positive; got {value}")
        with torch.no_grad():
            self.k_raw.fill_(self._raw_of(value))  # a Python float: no tensor read (a schedule calls it per epoch)

    def same_as(self, other: object) -> bool:
        """This manifold, or a copy with the same fixed ``k`` and ``k_range`` (a learnable ``k`` is only itself)."""
        if self is other:
            return True
        return (type(self) is type(other) and not self.learnable and not other.learnable
                and self.k_range == other.k_range and float(self.k) == float(other.k))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        legacy = state_dict.pop(prefix + "log_k", None)
        if legacy is not None and prefix + "k_raw" not in state_dict:
            # a checkpoint of the former parametrisation (the parameter was log k itself)
            value = float(torch.as_tensor(legacy).double().exp())
            state_dict[prefix + "k_raw"] = torch.tensor(self._raw_of(value), dtype=self.k_raw.dtype)
        raw = state_dict.get(prefix + "k_raw")
        if raw is not None and not bool(torch.isfinite(torch.as_tensor(raw)).all()):
            raise ValueError(
                f"refusing to load a non-finite Lorentz curvature ({prefix}k_raw = {raw!r}): the checkpoint was "
                f"written after training diverged; load an earlier checkpoint"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"k={float(self.k):.4g}, learnable={self.learnable}"

    # -- sizes ---------------------------------------------------------------------------------------------
    def ambient_dim(self, n: int) -> int:
        return n + 1

    def intrinsic_dim(self, x: Tensor) -> int:
        return x.size(-1) - 1

    # -- checks (geoopt interface) -------------------------------------------------------------------------
    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 0.0, rtol: float = MANIFOLD_CHECK_RTOL,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        x = x.movedim(dim, -1)
        if not bool(torch.isfinite(x).all()):
            return False, "contains NaN or inf coordinates"
        x64 = x.double()
        k = self.k.detach().double()
        err = (lm.inner(x64, x64) + k).abs()
        scale = k + x64[..., 0] ** 2 + (x64[..., 1:] ** 2).sum(-1)
        worst = float((err - atol - rtol * scale).max()) if err.numel() else -1.0
        if worst > 0 or (x64[..., 0] <= 0).any():
            rel = float((err / scale).max())
            return False, (
                f"not on the Lorentz manifold (k={float(k):.4g}): max |<x,x>_L + k| / (k + |x|^2) = {rel:.3g} "
                f"> rtol {rtol:g} (or x_0 <= 0); project it with Lorentz.projx, or map tangent vectors with expmap0"
            )
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 0.0,
                                 rtol: float = MANIFOLD_CHECK_RTOL, dim: int = -1) -> Tuple[bool, Optional[str]]:
        x, u = x.movedim(dim, -1).double(), u.movedim(dim, -1).double()
        if not bool(torch.isfinite(u).all()):
            return False, "contains NaN or inf coordinates"
        err = lm.inner(x, u).abs()
        scale = torch.linalg.vector_norm(x, dim=-1) * torch.linalg.vector_norm(u, dim=-1)
        if bool((err > atol + rtol * scale + 1e-12).any()):
            rel = float((err / scale.clamp_min(1e-300)).max())
            return False, (
                f"not tangent to the Lorentz manifold at x: max |<x,u>_L| / (|x||u|) = {rel:.3g} > rtol {rtol:g}; "
                f"project it with Lorentz.proju(x, u)"
            )
        return True, None

    # -- geoopt operations ---------------------------------------------------------------------------------
    def inner(self, x: Tensor, u: Tensor, v: Optional[Tensor] = None, *, keepdim: bool = False,
              dim: int = -1) -> Tensor:
        """Minkowski product ``<u, v>_L`` (``v = u`` if omitted); ``x`` is the base point (unused)."""
        return lm.inner(u, u if v is None else v, keepdim=keepdim, dim=dim)

    def norm(self, u: Tensor, x: Optional[Tensor] = None, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """Riemannian norm ``||u||_L`` of a tangent vector."""
        return lm.norm(u, keepdim=keepdim, dim=dim)

    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        self._check_size(x.movedim(dim, -1), "x")
        return lm.projx(x, self.k, dim=dim)

    def proju(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return lm.proju(x, u, self.k, dim=dim)

    def egrad2rgrad(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return lm.egrad2rgrad(x, u, self.k, dim=dim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_point(y.movedim(dim, -1), "y")
        return lm.dist(x, y, self.k, keepdim=keepdim, dim=dim)

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self.validate_point(x.movedim(dim, -1), "x")
        return lm.dist0(x, self.k, keepdim=keepdim, dim=dim)

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_tangent(x.movedim(dim, -1), u.movedim(dim, -1), "u")
        return lm.expmap(x, u, self.k, dim=dim)

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_point(y.movedim(dim, -1), "y")
        return lm.logmap(x, y, self.k, dim=dim)

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        self._check_size(u.movedim(dim, -1), "u")
        if self.validate:
            self._check_finite(u, "u")
        return lm.expmap0(u, self.k, dim=dim)

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(x.movedim(dim, -1), "x")
        return lm.logmap0(x, self.k, dim=dim)

    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_point(y.movedim(dim, -1), "y")
        self.validate_tangent(x.movedim(dim, -1), v.movedim(dim, -1), "v")
        return lm.transp(x, y, v, self.k, dim=dim)

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(y.movedim(dim, -1), "y")
        return lm.transp0(y, u, self.k, dim=dim)

    def transp0back(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_tangent(x.movedim(dim, -1), u.movedim(dim, -1), "u")
        return lm.transp0back(x, u, self.k, dim=dim)

    def origin(self, *size, dtype=None, device=None, seed: int = 42) -> geoopt.ManifoldTensor:
        """The origin ``(sqrt(k), 0, …, 0)`` broadcast to ``size`` (last entry = ``n + 1``)."""
        size = geoopt.utils.size2shape(*size)
        k = self.k.detach().to(dtype=dtype or self.k_raw.dtype, device=device or self.k_raw.device)
        o = torch.zeros(*size, dtype=k.dtype, device=k.device)
        o[..., 0] = k.sqrt()
        return geoopt.ManifoldTensor(o, manifold=self)

    def random(self, *size, mean: float | Tensor = 0.0, std: float | Tensor = 1.0, dtype=None,
               device=None) -> geoopt.ManifoldTensor:
        """``exp_o(v)`` with tangent coordinates ``v ~ N(mean, std²)`` (last entry of size = ``n+1``): the wrapped
        normal at the origin for ``mean = 0``. (geoopt's ``random_normal`` also rescales ``v`` to unit norm, so
        its ``std`` changes nothing but the direction; here ``mean`` and ``std`` mean what they say.)"""
        size = geoopt.utils.size2shape(*size)
        v = torch.randn(*size[:-1], size[-1] - 1, dtype=dtype or self.k_raw.dtype,
                        device=device or self.k_raw.device) * std + mean
        return geoopt.ManifoldTensor(self.expmap0_spatial(v), manifold=self)

    random_normal = random

    def inner0(self, v: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``<o, v>_L = -sqrt(k)·v₀`` (:func:`~manifolds.lorentz_math.inner0`)."""
        return lm.inner0(v, self.k, keepdim=keepdim, dim=dim)

    def logmap0back(self, x: Tensor, *, dim: int = -1) -> Tensor:
        """``log_x(o)``, the tangent vector at ``x`` towards the origin (:func:`~manifolds.lorentz_math.logmap0back`)."""
        self.validate_point(x.movedim(dim, -1), "x")
        return lm.logmap0back(x, self.k, dim=dim)

    def geodesic_unit(self, t: Tensor, x: Tensor, u: Tensor, *, dim: int = -1, project: bool = True) -> Tensor:
        """The unit-speed geodesic from ``x`` with velocity ``u`` (``||u||_L = 1``) at time ``t``
        (:func:`~manifolds.lorentz_math.geodesic_unit`), projected on the manifold unless ``project=False``."""
        self.validate_point(x.movedim(dim, -1), "x")
        self.validate_tangent(x.movedim(dim, -1), u.movedim(dim, -1), "u")
        if dim != -1:
            x, u = x.movedim(dim, -1), u.movedim(dim, -1)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        y = lm.geodesic_unit(t.unsqueeze(-1) if t.dim() and t.dim() == x.dim() - 1 else t, x, u, self.k)
        y = lm.projx(y, self.k) if project else y
        return y.movedim(-1, dim) if dim != -1 else y

    # -- tangent coordinates at the origin (used by distributions and flows) -------------------------------
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        """``exp_o((0, v))`` for tangent coordinates ``v ∈ ℝⁿ``."""
        self.validate_coords(v, "v")
        return lm.expmap0_spatial(v, self.k)

    def logmap0_spatial(self, x: Tensor) -> Tensor:
        """Tangent coordinates ``v ∈ ℝⁿ`` of ``log_o(x)``, computed from the spatial coordinates; a NaN or infinite
        time coordinate ``x₀`` makes the result NaN (such a point is not on the manifold: NaN in, NaN out)."""
        self.validate_point(x, "x")
        return lm.logmap0_spatial(x, self.k) + 0 * x[..., :1]

    def expmap_logdet(self, r: Tensor, n: int) -> Tensor:
        """``(n-1)·ℓ(r)``: log volume change of ``exp`` at a tangent vector of norm ``r``."""
        return lm.expmap_logdet(r, self.k.to(r.dtype), n)

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        """The isometry taking ``o`` to ``mu`` (``inverse``: ``mu`` to ``o``), applied to ``p``."""
        return lm.translate(mu, p, self.k, inverse=inverse)

    def to_poincare(self, x: Tensor) -> Tensor:
        """Coordinates in the Poincaré ball of radius ``sqrt(k)`` (for plots)."""
        return lm.lorentz_to_poincare(x, self.k)

    def from_poincare(self, p: Tensor) -> Tensor:
        """Inverse of :meth:`to_poincare`."""
        return lm.poincare_to_lorentz(p, self.k)
