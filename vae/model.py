"""One VAE for every latent manifold, with an optional flow in the posterior (Bose et al. 2020, §4.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from torch.distributions import Distribution

from flows.distribution import FlowDistribution, Latent
from manifolds import WrappedNormal

from .constants import FLOW_HIDDEN, FLOW_LAYERS, MAX_TANGENT_NORM
from .likelihoods import Likelihood, make_likelihood
from .posteriors import closed_form_kl, posterior_head, prior_log_prob, standard_prior

Tensor = torch.Tensor

def bound_tangent(m: Tensor, max_norm: float = MAX_TANGENT_NORM) -> Tensor:
    r"""Smooth radial bound ``m ↦ B·tanh(|m|/B)·m/|m|`` (identity to first order near 0, norm < ``B``).

    Used on the encoder's output, before any bijection (MATH.md §2: no clamp inside a flow).
    """
    r = torch.linalg.vector_norm(m, dim=-1, keepdim=True)
    # tanh(r/B)·B/r, written with its series near 0 so the gradient is finite at m = 0
    z = r / max_norm
    small = z < 1e-3
    zs = torch.where(small, torch.ones_like(z), z)
    factor = torch.where(small, 1 - z * z / 3, torch.tanh(zs) / zs)
    return m * factor


def check_flow_manifold(flow: nn.Module | None, manifold: nn.Module) -> None:
    """A ready-made posterior/prior flow must act on the model's own manifold object (``flows.build(…,
    share_manifold=True)``): on a copy, the model's curvature (learnable, or set by a schedule) would not reach it."""
    if flow is None or flow.manifold is manifold:
        return
    if manifold.curvature_parameter is None and manifold.same_as(flow.manifold):
        return  # no curvature parameter to share (ℝⁿ): an interchangeable copy is the same space
    raise ValueError(
        f"the flow acts on a different {flow.manifold.name} object than the model's manifold, so the model's curvature "
        f"(learnable, or set by a schedule) would not reach it; build it with flows.build(name, manifold, dim, "
        f"share_manifold=True) on the model's manifold, or pass the flow's name"
    )


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear → act → … → Linear`` through ``sizes``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


@dataclass
class ELBOTerms:
    r"""The pieces of the single-sample ELBO (MATH.md §5), each of shape ``batch``.

    ``kl`` is ``KL(q(z|x) ‖ p(z))`` in closed form where it has one and no flow is used (``kl_exact``: vMF against
    the uniform prior on a sphere), else its single-sample estimate ``log q₀ - ladj - log p(z_K)``;
    ``elbo = log_px_z - kl`` (without ``kl_exact``: ``log_px_z + log_pz - log_q0 + ladj``).
    """

    log_px_z: Tensor
    log_pz: Tensor
    log_q0: Tensor
    ladj: Tensor
    kl_exact: Tensor | None = None

    @property
    def kl(self) -> Tensor:
        return self.kl_exact if self.kl_exact is not None else self.log_q0 - self.ladj - self.log_pz

    @property
    def elbo(self) -> Tensor:
        return self.log_px_z - self.kl


class VAE(nn.Module):
    r"""Variational autoencoder whose latent space is any manifold of the interface (ℝⁿ, Hⁿ, the Poincaré ball, Sⁿ,
    Tⁿ, products), the posterior family and prior chosen from what it declares (:mod:`vae.posteriors`).

    * Posterior: ``q₀(z₀|x) = WrappedNormal(μ(x), σ(x))`` with ``μ = exp_o(μ̃(x))`` (tangent coordinates ``μ̃``,
      smoothly bounded by :func:`bound_tangent`) and ``σ = softplus(·) + MIN_SCALE``; on a sphere
      ``vMF(μ(x), κ(x))`` with ``μ`` the encoder's ``n + 1`` numbers normalised and ``κ = softplus(·) +
      MIN_CONCENTRATION`` (Davidson et al. 2018); on a product, the factors' side by side. Optionally
      ``z_K = f(z₀)`` with a flow ``f`` (``log q(z_K|x) = log q₀(z₀|x) - log|det ∂f/∂z₀|``).
    * Prior: ``p(z) = WrappedNormal(o, I)`` (the standard normal on ℝⁿ); the uniform law on a compact manifold;
      the product of the factors' on a product. ``KL(q ‖ p)`` in closed form where one is registered and there is
      no flow (vMF ‖ uniform), else by Monte Carlo.
    * Decoder: ``p(x | z) = likelihood(decoder(log_o(z_K)))`` where ``exp_o`` is a global chart
      (:attr:`~manifolds.ManifoldOps.exp0_is_diffeomorphism`), else ``likelihood(decoder(chart_features(z_K)))`` (the
      ambient coordinates on Sⁿ: ``log_o`` jumps at the cut locus).

    Args:
        manifold: the latent manifold; its curvature (``Lorentz.k_raw``) becomes a parameter of the model.
        data_dim: number of input features.
        latent_dim: intrinsic latent dimension ``n``.
        hidden: width of the default one-hidden-layer MLP encoder and decoder.
        flow: ``None``, a name for :func:`flows.build` (``"nc"``, ``"tc"``, ``"whc"``, …) or a ready
            ``flows.Transform`` mapping ``q₀``'s samples (ambient coordinates) to ``z_K``.
        flow_layers, flow_hidden: passed to :func:`flows.build` when ``flow`` is a name.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or a :class:`~vae.likelihoods.Likelihood`.
        encoder: optional module ``x ↦ (…, m)`` (locations, then pre-softplus spreads: ``m = 2n`` for a wrapped
            normal, ``n + 2`` for a vMF; ``posterior_head(manifold, n).size``); replaces the default MLP.
        decoder: optional module ``(…, d) ↦ likelihood parameters`` (``d = n``, or ``manifold.chart_feature_dim(n)``
            where ``exp_o`` is not a global chart); replaces the default MLP.
        max_tangent_norm: the bound ``B`` of the posterior mean's tangent norm (``None``: unbounded).

    Example:
        >>> from manifolds import Lorentz
        >>> model = VAE(Lorentz(k=1.0), data_dim=6, latent_dim=2, hidden=8)
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> model.elbo(x).elbo.shape
        torch.Size([4])
        >>> bool(model.iwae(x, num_samples=10).le(0).all())
        True
        >>> from manifolds import Sphere
        >>> s_vae = VAE(Sphere(2), data_dim=6, latent_dim=2, hidden=8)  # vMF posterior, uniform prior
        >>> type(s_vae.encode(x)).__name__, s_vae.elbo(x).kl_exact.shape
        ('VonMisesFisher', torch.Size([4]))
    """

    def __init__(
        self,
        manifold: nn.Module,
        data_dim: int,
        latent_dim: int,
        *,
        hidden: int = 200,
        flow: str | nn.Module | None = None,
        flow_layers: int = FLOW_LAYERS,
        flow_hidden: int = FLOW_HIDDEN,
        likelihood: str | Likelihood = "bernoulli",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        max_tangent_norm: float | None = MAX_TANGENT_NORM,
    ) -> None:
        super().__init__()
        if data_dim < 1 or latent_dim < 1:
            raise ValueError(f"data_dim and latent_dim must be >= 1; got {data_dim}, {latent_dim}")
        self.manifold = manifold
        self.data_dim = int(data_dim)
        self.latent_dim = int(latent_dim)
        self.max_tangent_norm = max_tangent_norm
        self.head = posterior_head(manifold, self.latent_dim, max_tangent_norm)
        self.tangent_decoder = manifold.exp0_is_diffeomorphism
        decoder_in = latent_dim if self.tangent_decoder else manifold.chart_feature_dim(latent_dim)
        self.encoder = encoder if encoder is not None else mlp([data_dim, hidden, self.head.size])
        self.decoder = decoder if decoder is not None else mlp([decoder_in, hidden, data_dim])
        self.likelihood = make_likelihood(likelihood, data_dim) if isinstance(likelihood, str) else likelihood
        if isinstance(flow, str):
            import flows

            flow = flows.build(flow, manifold, latent_dim, layers=flow_layers, hidden=flow_hidden,
                               share_manifold=True)
        check_flow_manifold(flow, manifold)
        self.flow = flow

    # -- the three distributions -------------------------------------------------------------------------
    def prior(self) -> Distribution:
        """The prior on the latent manifold (dtype and device of the model), :func:`vae.posteriors.standard_prior`:
        ``WrappedNormal(o, I)`` declared at the origin (:meth:`~manifolds.WrappedNormal.at_origin`; the origin
        ``exp_o(0)`` stays differentiable in a learnable curvature), the uniform law on a compact manifold, the
        factors' on a product."""
        return standard_prior(self.manifold, self.latent_dim, next(self.parameters()))

    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 1 or x.size(-1) != self.data_dim:
            raise ValueError(
                f"input has {x.size(-1) if x.dim() else 0} features in its last dimension (shape "
                f"{tuple(x.shape)}), but this VAE was built with data_dim={self.data_dim}"
            )

    def encode(self, x: Tensor) -> Distribution:
        """The base posterior ``q₀(z₀ | x)`` (a wrapped normal, a vMF on a sphere, a product on a product)."""
        self._check_input(x)
        out = self.encoder(x)
        if out.size(-1) != self.head.size:
            raise ValueError(
                f"the encoder returned {out.size(-1)} outputs per input; on {self.manifold!r} it must return "
                f"{self.head.layout}"
            )
        return self.head.split(out)

    def decode(self, z: Tensor) -> torch.distributions.Distribution:
        """``p(x | z)`` for latent points ``z`` (ambient coordinates); the decoder sees ``log_o(z)`` (or
        ``chart_features(z)`` where ``exp_o`` is not a global chart)."""
        return self._decode(Latent(self.manifold, z, None, None, z.new_zeros(())))

    def decode_tangent(self, w: Tensor) -> torch.distributions.Distribution:
        """``p(x | z)`` for latents given by their tangent coordinates ``w = log_o(z)`` at the origin."""
        return self._decode(Latent(self.manifold, None, w, None, w.new_zeros(())))

    def _decode(self, latent: Latent) -> torch.distributions.Distribution:
        w = latent.tangents() if self.tangent_decoder else self.manifold.chart_features(latent.points())
        return self.likelihood.distribution(self.decoder(w))

    # -- posterior sampling --------------------------------------------------------------------------------
    def sample_posterior_latent(self, q0: Distribution, sample_shape: torch.Size = torch.Size()) -> Latent:
        """Reparameterised ``z_K = f(z₀)``, ``z₀ ~ q₀``, as a :class:`~flows.distribution.Latent` (tangent
        coordinates or points, whichever the path produced)."""
        return FlowDistribution(q0, self.flow).rsample_latent(sample_shape)

    def sample_posterior_tangent(self, q0: WrappedNormal, sample_shape: torch.Size = torch.Size()
                                 ) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_K, log q₀(z₀|x), log|det ∂f/∂z₀|)`` for reparameterised ``z₀ ~ q₀``, ``z_K = f(z₀)``, with the latents
        as tangent coordinates ``w_K = log_o(z_K)``: the draw (:meth:`~manifolds.WrappedNormal.
        rsample_logmap0_and_log_prob`) and the flow (:meth:`~flows.Transform.forward_tangent`) work in them, so no
        ``exp_o`` / ``log_o`` pair is evaluated in between (flows that do not act in tangent coordinates map
        points)."""
        latent = self.sample_posterior_latent(q0, sample_shape)
        return latent.tangents(), latent.log_q0, latent.ladj

    def sample_posterior(self, q0: WrappedNormal, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor,
                                                                                                     Tensor]:
        """``(z_K, log q₀(z₀|x), log|det ∂f/∂z₀|)`` for reparameterised ``z₀ ~ q₀``, ``z_K = f(z₀)`` (points)."""
        wk, log_q0, ladj = self.sample_posterior_tangent(q0, sample_shape)
        return self.manifold.expmap0_spatial(wk), log_q0, ladj

    # -- objectives ----------------------------------------------------------------------------------------
    def elbo(self, x: Tensor) -> ELBOTerms:
        r"""Single-sample ELBO terms (MATH.md §5), nothing added:
        ``ELBO = log p(x|z_K) + log p(z_K) - log q₀(z₀|x) + log|det ∂f/∂z₀|`` (in tangent coordinates where the
        path allows), or ``log p(x|z) - KL(q ‖ p)`` where the KL has a closed form and there is no flow."""
        q0 = self.encode(x)
        latent = self.sample_posterior_latent(q0)
        prior = self.prior()
        kl_exact = closed_form_kl(q0, prior) if self.flow is None else None
        return ELBOTerms(self._decode(latent).log_prob(x), prior_log_prob(prior, latent), latent.log_q0, latent.ladj,
                         kl_exact)

    def loss(self, x: Tensor) -> Tensor:
        """``-mean ELBO`` over the batch, for minimisation."""
        return -self.elbo(x).elbo.mean()

    def log_weights(self, x: Tensor, num_samples: int) -> Tensor:
        r"""Importance log-weights ``log p(x|z_K) + log p(z_K) - log q(z_K|x)``, shape ``(num_samples, batch)``."""
        latent = self.sample_posterior_latent(self.encode(x), torch.Size([num_samples]))
        return self._decode(latent).log_prob(x) + prior_log_prob(self.prior(), latent) - latent.log_prob

    def iwae(self, x: Tensor, num_samples: int = 500, chunk_size: int | None = None) -> Tensor:
        r"""IWAE bound per input, ``log (1/K) Σ_k w_k`` with ``K = num_samples`` (``logsumexp``), in chunks.

        See :func:`vae.objectives.iwae_bound`; gradients flow if enabled.
        """
        from .objectives import iwae_bound

        return iwae_bound(self, x, num_samples, chunk_size)

    @torch.no_grad()
    def sample(self, num: int) -> Tensor:
        """Draw ``num`` latent points from the prior and return the decoder's mean of ``p(x|z)``."""
        z = self.prior().sample(torch.Size([num]))
        return self.decode(z).mean
