r"""Inference surjections with exact likelihoods (SurVAE flows, Nielsen et al., NeurIPS 2020, arXiv 2007.02731).

A surjection ``g`` maps data to a *canonical* representative (``|x|``, ``sort(x)``); it forgets a discrete
choice (the signs, the order) that the generative direction re-draws uniformly. In this library's convention
(``MATH.md`` §1, base → data):

* ``inverse(y) -> (g(y), ladj)``: the deterministic inference map, with ``ladj = -log |fibre|`` (``-D log 2``
  for ``abs``, ``-log D!`` for ``sort``);
* ``forward(z) -> (y, -ladj)``: draws one of the ``|fibre|`` pre-images of ``z`` uniformly at random.

``log p(y) = log p_Z(g(y)) - log |fibre|`` is exact, *provided the base ``p_Z`` lives on the canonical domain*
(the image of ``g``: the positive orthant, or sorted vectors). :class:`FoldedDistribution` makes such a base
from any distribution. Both layers are ``bijective = False`` and have no parameters. The group actions (sign
flips, permutations) are isometries of ℝⁿ fixing the origin, so lifted to Hⁿ as ``exp_o ∘ g ∘ log_o``
(``"abs@lorentz"``, ``"sort@lorentz"``) the exp-map terms ``(n-1)·(ℓ(‖g(w)‖) - ℓ(‖w‖))`` cancel (``‖g(w)‖ =
‖w‖``): the lifted layers act on the tangent coordinates at the origin with the same ``ladj``.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
from torch.distributions import Distribution

from .registry import on_rn, register
from .transform import TangentSpaceTransform, Transform

Tensor = torch.Tensor

#: :meth:`SymmetrySurjection.orbit` enumerates the whole fibre; refuse fibres larger than this (2¹⁶ sign
#: patterns, or 8! = 40320 permutations, per point).
MAX_ORBIT_SIZE: int = 2 ** 16


class SymmetrySurjection(Transform):
    r"""Quotient of ℝᴰ by a finite group ``G`` of coordinate isometries: ``inverse`` picks the canonical
    representative of ``y``'s orbit, ``forward`` a uniformly random element of ``z``'s orbit.

    ``log p(y) = log p_Z(g(y)) - log |G|`` (``ladj`` of ``inverse`` is ``-log |G|``, of ``forward`` ``+log |G|``)
    for a base ``p_Z`` on the canonical domain. Subclasses define :meth:`canonical`, :meth:`act_randomly`,
    :meth:`orbit` and :meth:`log_group_size`.
    """

    bijective = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim}")
        self.dim = int(dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, manifold={self.manifold.name}"

    def _check(self, x: Tensor, what: str) -> None:
        if x.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__}(dim={self.dim}) got {what} with last dimension {x.size(-1)}; "
                             f"pass points of shape (..., {self.dim})")

    def log_group_size(self) -> float:  # pragma: no cover - overridden
        """``log |G|``: the log of the number of pre-images of a canonical point (the surjection's likelihood term)."""
        raise NotImplementedError

    def canonical(self, y: Tensor) -> Tensor:  # pragma: no cover - overridden
        """The inference map: the canonical representative of ``y``'s orbit (e.g. ``|y|`` or ``sort(y)``)."""
        raise NotImplementedError

    def act_randomly(self, z: Tensor) -> Tensor:  # pragma: no cover - overridden
        """A uniformly random element of the group applied to ``z`` (one pre-image of ``z``, drawn uniformly)."""
        raise NotImplementedError

    def orbit(self, z: Tensor) -> Tensor:  # pragma: no cover - overridden
        """All ``|G|`` images ``h·z``, shape ``(..., |G|, D)`` (with repeats where ``z`` has a symmetry)."""
        raise NotImplementedError

    def _check_orbit_size(self) -> None:
        if self.log_group_size() > math.log(MAX_ORBIT_SIZE):
            raise ValueError(f"{type(self).__name__}(dim={self.dim}): the orbit has exp({self.log_group_size():.1f}) "
                             f"elements, more than MAX_ORBIT_SIZE={MAX_ORBIT_SIZE}; enumerate orbits only in small "
                             "dimensions")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(x, "x")
        return self.act_randomly(x), x.new_full(x.shape[:-1], self.log_group_size())

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y")
        return self.canonical(y), y.new_full(y.shape[:-1], -self.log_group_size())


class AbsSurjection(SymmetrySurjection):
    r"""The absolute-value surjection of SurVAE flows (Nielsen et al. 2020): ``z = |y|`` elementwise.

    Inference (``inverse``): ``y ↦ |y|`` with ``ladj = -D log 2``, so ``log p(y) = log p_Z(|y|) - D log 2``: exact
    for a base ``p_Z`` on the positive orthant (e.g. a half-normal, a log-normal, or :class:`FoldedDistribution`).
    Generation (``forward``): ``z ↦ s ⊙ z`` with independent uniform signs ``s ∈ {±1}ᴰ`` (``ladj = +D log 2``).
    The resulting density is mirror-symmetric in every coordinate; use it for data with that symmetry.

    Args:
        dim: the number of coordinates ``D``.

    Example:
        >>> f = AbsSurjection(2)
        >>> f.inverse(torch.tensor([[-1.5, 2.0]]))
        (tensor([[1.5000, 2.0000]]), tensor([-1.3863]))
        >>> y, ladj = f(torch.tensor([[1.5, 2.0]]))   # random signs
        >>> bool((y.abs() == torch.tensor([1.5, 2.0])).all()), ladj
        (True, tensor([1.3863]))
    """

    def log_group_size(self) -> float:
        return self.dim * math.log(2.0)

    def canonical(self, y: Tensor) -> Tensor:
        return y.abs()

    def act_randomly(self, z: Tensor) -> Tensor:
        signs = torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1
        return z * signs

    def orbit(self, z: Tensor) -> Tensor:
        self._check_orbit_size()
        signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=self.dim)), dtype=z.dtype, device=z.device)
        return z.unsqueeze(-2) * signs


class SortSurjection(SymmetrySurjection):
    r"""The sorting surjection of SurVAE flows (Nielsen et al. 2020) for exchangeable data: ``z = sort(y)``.

    Inference (``inverse``): sort the coordinates ascending, ``ladj = -log D!``, so ``log p(y) = log p_Z(sort(y))
    - log D!``: exact for a base ``p_Z`` on sorted vectors ``z₁ ≤ … ≤ z_D`` (e.g. :class:`FoldedDistribution`).
    Generation (``forward``): apply a uniformly random permutation (``ladj = +log D!``). The resulting density is
    permutation invariant (exchangeable coordinates).

    Args:
        dim: the number of coordinates ``D``.

    Example:
        >>> f = SortSurjection(3)
        >>> f.inverse(torch.tensor([[2.0, -1.0, 0.5]]))
        (tensor([[-1.0000,  0.5000,  2.0000]]), tensor([-1.7918]))
        >>> y, _ = f(torch.tensor([[-1.0, 0.5, 2.0]]))   # a random permutation
        >>> y.sort(-1).values
        tensor([[-1.0000,  0.5000,  2.0000]])
    """

    def log_group_size(self) -> float:
        return math.lgamma(self.dim + 1)

    def canonical(self, y: Tensor) -> Tensor:
        return y.sort(dim=-1).values

    def act_randomly(self, z: Tensor) -> Tensor:
        perm = torch.rand(z.shape, device=z.device).argsort(dim=-1)
        return z.gather(-1, perm)

    def orbit(self, z: Tensor) -> Tensor:
        self._check_orbit_size()
        perms = torch.tensor(list(itertools.permutations(range(self.dim))), device=z.device)
        return z[..., perms]


def _orbit(transform: Transform, z: Tensor) -> Tensor:
    """All images of ``z`` under the group of a (possibly lifted) :class:`SymmetrySurjection`, ``(..., |G|, D)``."""
    if isinstance(transform, TangentSpaceTransform):
        M = transform.manifold
        return M.expmap0_spatial(_orbit(transform.inner, M.logmap0_spatial(z)))
    if isinstance(transform, SymmetrySurjection):
        return transform.orbit(z)
    raise TypeError(f"FoldedDistribution needs a SymmetrySurjection (or one lifted with lift_to); got "
                    f"{type(transform).__name__}")


class FoldedDistribution(Distribution):
    r"""The law of ``g(X)``, ``X ~ base``, for a symmetry surjection ``g`` (its inference map): a base on the
    canonical domain, as :class:`AbsSurjection` / :class:`SortSurjection` need.

    ``log p(z) = log Σ_{h ∈ G} p_base(h·z)`` for ``z`` in the canonical domain (``|G| = 2ᴰ`` sign flips or ``D!``
    permutations; the group acts by isometries, so no Jacobian appears — also for the lifted surjections on Hⁿ,
    where ``h`` acts on the tangent coordinates at the origin). ``Flow(FoldedDistribution(base, g), g)`` is then
    the symmetrisation ``(1/|G|) Σ_h p_base(h·y)`` of ``base``: a normalised density for any ``base``. The orbit
    sum costs ``|G|`` base evaluations per point (small ``D`` only, see :data:`MAX_ORBIT_SIZE`).

    Args:
        base: any distribution on the manifold of ``surjection``.
        surjection: an :class:`AbsSurjection` or :class:`SortSurjection`, or one lifted with ``lift_to``.

    Example:
        >>> from torch.distributions import Independent, Normal
        >>> from flows import Flow
        >>> g = AbsSurjection(1)
        >>> q = Flow(FoldedDistribution(Independent(Normal(torch.tensor([1.0]), 1.0), 1), g), g)
        >>> y = torch.tensor([[0.7], [-0.7]])
        >>> target = 0.5 * (Normal(1.0, 1.0).log_prob(y).exp() + Normal(-1.0, 1.0).log_prob(y).exp())
        >>> torch.allclose(q.log_prob(y).exp(), target.squeeze(-1))
        True
    """

    has_rsample = True

    def __init__(self, base: Distribution, surjection: Transform) -> None:
        if surjection.bijective:
            raise ValueError("FoldedDistribution folds a base through a surjection (bijective = False); "
                             f"got the bijection {type(surjection).__name__}")
        self.base = base
        self.surjection = surjection
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.surjection.inverse(self.base.rsample(torch.Size(sample_shape)))[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.logsumexp(self.base.log_prob(_orbit(self.surjection, value)), dim=-1)


def _no_options(name: str, kw: dict) -> None:
    extra = set(kw) - {"layers", "hidden", "conditioner"}
    if extra:
        raise ValueError(f"flow {name!r} has no parameters and takes no options; got {sorted(extra)}")


@register("abs", on_rn, "SurVAE absolute-value surjection |x| (Nielsen et al. 2020; not bijective, "
          "base on the positive orthant)", lift=True)
def _abs(manifold, dim, **kw) -> Transform:
    """A single :class:`AbsSurjection` (``layers``, ``hidden`` and ``conditioner`` do not apply)."""
    _no_options("abs", kw)
    return AbsSurjection(dim)


@register("sort", on_rn, "SurVAE sorting surjection for exchangeable data (Nielsen et al. 2020; not "
          "bijective, base on sorted vectors)", lift=True)
def _sort(manifold, dim, **kw) -> Transform:
    """A single :class:`SortSurjection` (``layers``, ``hidden`` and ``conditioner`` do not apply)."""
    _no_options("sort", kw)
    return SortSurjection(dim)
