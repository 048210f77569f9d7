r"""The posterior and the prior a VAE puts on its latent manifold, chosen from what the manifold declares
(:attr:`~manifolds.ManifoldOps.posterior_family`, :attr:`~manifolds.ManifoldOps.is_compact`), never from its name.

* **Wrapped normal** (``posterior_family is None``: ℝⁿ, Hⁿ, the ball, Tⁿ): the encoder gives ``n`` tangent means
  ``μ̃`` (smoothly bounded, :func:`~vae.model.bound_tangent`) and ``n`` pre-softplus scales;
  ``q = WrappedNormal(exp_o(μ̃), softplus(s) + MIN_SCALE)`` (the ball's goes through the hyperboloid, the torus's sums
  the preimages of ``exp``: the manifold's own :attr:`~manifolds.ManifoldOps.wrapped_normal_class`).
* **von Mises–Fisher** (spheres; Davidson et al. 2018): the encoder gives ``n + 1`` ambient numbers, projected onto
  the sphere (``μ = r·m/|m|``), and one pre-softplus concentration, ``κ = softplus(s) + MIN_CONCENTRATION``.
* **Product** (products): the factors' heads side by side; ``q = Π_i q_i``.

The prior is the uniform law of the Riemannian volume where the manifold is compact, ``WrappedNormal(o, I)``
otherwise, and the product of the factors' priors on a product. ``KL(q ‖ p)`` has a closed form where
``torch.distributions`` has one registered (vMF against the uniform: :func:`manifolds.kl_vmf_uniform`):
:func:`closed_form_kl`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution
from torch.distributions.kl import _dispatch_kl

from flows.distribution import Latent
from manifolds import ProductDistribution, VonMisesFisher, WrappedNormal

from .constants import MIN_CONCENTRATION, MIN_SCALE

Tensor = torch.Tensor


class PosteriorHead:
    """How an encoder's outputs become the posterior on a manifold: the encoder gives ``loc_size`` location numbers
    and ``scale_size`` spread numbers per input (location first), and :meth:`__call__` builds the distribution.
    Built by :func:`posterior_head` (plain attributes: a model holding one pickles).

    Example:
        >>> from manifolds import Sphere
        >>> head = posterior_head(Sphere(2), 2)
        >>> head.loc_size, head.scale_size
        (3, 1)
        >>> q = head(torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[0.0]]))
        >>> type(q).__name__, q.loc.tolist()
        ('VonMisesFisher', [[0.0, 0.0, 1.0]])
    """

    loc_size: int
    scale_size: int
    #: what the encoder must return, for error messages
    layout: str

    def __init__(self, manifold, latent_dim: int) -> None:
        self.manifold = manifold
        self.latent_dim = latent_dim

    @property
    def size(self) -> int:
        """Encoder outputs per input: ``loc_size + scale_size``."""
        return self.loc_size + self.scale_size

    def __call__(self, loc: Tensor, raw_scale: Tensor) -> Distribution:  # pragma: no cover - overridden
        """The posterior for location outputs ``loc`` (``loc_size``) and spread outputs ``raw_scale`` (``scale_size``)."""
        raise NotImplementedError

    def split(self, out: Tensor) -> Distribution:
        """The posterior for one encoder output of ``size`` numbers (location first)."""
        return self(out[..., :self.loc_size], out[..., self.loc_size:])


class WrappedNormalHead(PosteriorHead):
    """``WrappedNormal(exp_o(μ̃), softplus(s) + MIN_SCALE)`` from ``n`` tangent means (bounded by
    :func:`~vae.model.bound_tangent` when ``max_tangent_norm`` is set) and ``n`` pre-softplus scales."""

    def __init__(self, manifold, latent_dim: int, max_tangent_norm: float | None) -> None:
        super().__init__(manifold, latent_dim)
        self.loc_size = self.scale_size = latent_dim
        self.max_tangent_norm = max_tangent_norm
        self.layout = f"2·latent_dim = {2 * latent_dim} (tangent means, then pre-softplus scales)"

    def __call__(self, mean: Tensor, raw: Tensor) -> Distribution:
        from .model import bound_tangent  # here: model imports this module

        if self.max_tangent_norm is not None:
            mean = bound_tangent(mean, self.max_tangent_norm)
        return WrappedNormal(self.manifold.expmap0_spatial(mean), F.softplus(raw) + MIN_SCALE, self.manifold)


class VonMisesFisherHead(PosteriorHead):
    """``vMF(r·m/|m|, softplus(s) + MIN_CONCENTRATION)`` from ``n + 1`` ambient numbers ``m`` and one
    pre-softplus concentration ``s`` (Davidson et al. 2018)."""

    def __init__(self, manifold, latent_dim: int) -> None:
        _check_fixed_dim(manifold, latent_dim)
        super().__init__(manifold, latent_dim)
        self.loc_size, self.scale_size = manifold.ambient_dim(latent_dim), 1
        self.layout = (f"latent_dim + 2 = {self.size} ({self.loc_size} ambient numbers of the mean direction, then "
                       f"a pre-softplus concentration)")

    def __call__(self, loc: Tensor, raw: Tensor) -> Distribution:
        kappa = F.softplus(raw.squeeze(-1)) + MIN_CONCENTRATION
        return VonMisesFisher(self.manifold.projx(loc), kappa, self.manifold)


class ProductHead(PosteriorHead):
    """The factors' heads side by side: locations ``[loc_1, …, loc_m]`` then spreads ``[s_1, …, s_m]``;
    the posterior is the :class:`~manifolds.ProductDistribution` of the factors'."""

    def __init__(self, manifold, latent_dim: int, max_tangent_norm: float | None) -> None:
        _check_fixed_dim(manifold, latent_dim)
        super().__init__(manifold, latent_dim)
        self.heads = [posterior_head(m, m.dim, max_tangent_norm) for m in manifold.factors]
        self.loc_size = sum(h.loc_size for h in self.heads)
        self.scale_size = sum(h.scale_size for h in self.heads)
        self.layout = f"{self.size} (the factors' locations, then their pre-softplus spreads)"

    def __call__(self, loc: Tensor, raw: Tensor) -> Distribution:
        locs = loc.split([h.loc_size for h in self.heads], -1)
        raws = raw.split([h.scale_size for h in self.heads], -1)
        return ProductDistribution(self.manifold, [h(a, b) for h, a, b in zip(self.heads, locs, raws)])


def posterior_head(manifold, latent_dim: int, max_tangent_norm: float | None = None) -> PosteriorHead:
    """The :class:`PosteriorHead` of ``manifold`` at intrinsic dimension ``latent_dim``, from its declared
    :attr:`~manifolds.ManifoldOps.posterior_family`; ``max_tangent_norm`` bounds the wrapped normal's tangent means
    (:func:`~vae.model.bound_tangent`; ``None``: unbounded)."""
    family = manifold.posterior_family
    if family is None:
        return WrappedNormalHead(manifold, latent_dim, max_tangent_norm)
    if family is VonMisesFisher:
        return VonMisesFisherHead(manifold, latent_dim)
    if family is ProductDistribution:
        return ProductHead(manifold, latent_dim, max_tangent_norm)
    raise ValueError(f"{manifold!r} declares the posterior family {family.__name__}, which the VAEs do not know how to "
                     f"parameterise; declare None (the wrapped normal), VonMisesFisher or ProductDistribution")


def _check_fixed_dim(manifold, n: int) -> None:
    if manifold.dim is not None and manifold.dim != n:
        raise ValueError(f"latent_dim={n} but the latent manifold {manifold!r} has dimension {manifold.dim}: build "
                         f"the manifold with dimension {n} or pass latent_dim={manifold.dim}")


def standard_prior(manifold, latent_dim: int, like: Tensor) -> Distribution:
    """The VAE's prior on ``manifold`` (dtype and device of ``like``): the product of the factors' priors on a
    product, the uniform law where the manifold is compact, else ``WrappedNormal(o, I)`` declared at the origin
    (:meth:`~manifolds.WrappedNormal.at_origin`: ``o`` stays differentiable in a learnable curvature).

    Example:
        >>> from manifolds import Lorentz, Sphere
        >>> type(standard_prior(Sphere(2), 2, torch.zeros(()))).__name__
        'UniformOnManifold'
        >>> type(standard_prior(Lorentz(), 2, torch.zeros(()))).__name__
        'WrappedNormal'
    """
    if manifold.posterior_family is ProductDistribution:
        return ProductDistribution(manifold, [standard_prior(m, m.dim, like) for m in manifold.factors])
    if manifold.is_compact:
        _check_fixed_dim(manifold, latent_dim)
        return manifold.uniform(dtype=like.dtype, device=like.device)
    return WrappedNormal.at_origin(like.new_ones(latent_dim), manifold)


def prior_log_prob(prior: Distribution, latent: Latent) -> Tensor:
    """``log p(z)`` of latents held either way: in tangent coordinates where both the latent and the prior have
    them (a wrapped normal), else at the points."""
    if latent.tangent is not None and isinstance(prior, WrappedNormal):
        return prior.log_prob_logmap0(latent.tangent)
    return prior.log_prob(latent.points())


def closed_form_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """``KL(q ‖ p)`` where ``torch.distributions`` has it registered for these types (``kl_divergence``), else
    ``None`` (then the caller estimates it by Monte Carlo). The lookup reads types only (no tensor values).

    Example:
        >>> from manifolds import Sphere
        >>> q = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(5.0))
        >>> closed_form_kl(q, Sphere(2).uniform()).shape, closed_form_kl(q, q) is None
        (torch.Size([]), True)
    """
    # _dispatch_kl is kl_divergence's own lookup (cached, types only); kl_divergence raises where it finds none
    if _dispatch_kl(type(q), type(p)) is NotImplemented:
        return None
    return torch.distributions.kl_divergence(q, p)
