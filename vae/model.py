"""One VAE for every latent manifold, with an optional flow in the posterior (Bose et al. 2020, §4.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flows.distribution import FlowDistribution
from manifolds import WrappedNormal

from .constants import FLOW_HIDDEN, FLOW_LAYERS, MAX_TANGENT_NORM, MIN_SCALE
from .likelihoods import Likelihood, make_likelihood

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

    ``elbo = log_px_z + log_pz - log_q0 + ladj``; ``kl = log_q0 - ladj - log_pz`` is its single-sample KL
    estimate ``log q(z_K|x) - log p(z_K)``, so ``elbo = log_px_z - kl``.
    """

    log_px_z: Tensor
    log_pz: Tensor
    log_q0: Tensor
    ladj: Tensor

    @property
    def kl(self) -> Tensor:
        return self.log_q0 - self.ladj - self.log_pz

    @property
    def elbo(self) -> Tensor:
        return self.log_px_z + self.log_pz - self.log_q0 + self.ladj


class VAE(nn.Module):
    r"""Variational autoencoder whose latent space is ``manifold`` (``Euclidean`` or ``Lorentz``).

    * Posterior: ``q₀(z₀|x) = WrappedNormal(μ(x), σ(x))`` with ``μ = exp_o(μ̃(x))`` (tangent coordinates ``μ̃``,
      smoothly bounded by :func:`bound_tangent`) and ``σ = softplus(·) + MIN_SCALE``; optionally
      ``z_K = f(z₀)`` with a flow ``f`` (``log q(z_K|x) = log q₀(z₀|x) - log|det ∂f/∂z₀|``).
    * Prior: ``p(z) = WrappedNormal(o, I)`` (the standard normal on ℝⁿ).
    * Decoder: ``p(x | z) = likelihood(decoder(log_o(z_K)))``.

    Args:
        manifold: the latent manifold; its curvature (``Lorentz.k_raw``) becomes a parameter of the model.
        data_dim: number of input features.
        latent_dim: intrinsic latent dimension ``n``.
        hidden: width of the default one-hidden-layer MLP encoder and decoder.
        flow: ``None``, a name for :func:`flows.build` (``"nc"``, ``"tc"``, ``"whc"``, …) or a ready
            ``flows.Transform`` mapping ``q₀``'s samples (ambient coordinates) to ``z_K``.
        flow_layers, flow_hidden: passed to :func:`flows.build` when ``flow`` is a name.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or a :class:`~vae.likelihoods.Likelihood`.
        encoder: optional module ``x ↦ (…, 2n)`` (means, then pre-softplus scales); replaces the default MLP.
        decoder: optional module ``(…, n) ↦ likelihood parameters``; replaces the default MLP.
        max_tangent_norm: the bound ``B`` of the posterior mean's tangent norm (``None``: unbounded).

    Example:
        >>> from manifolds import Lorentz
        >>> model = VAE(Lorentz(k=1.0), data_dim=6, latent_dim=2, hidden=8)
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> model.elbo(x).elbo.shape
        torch.Size([4])
        >>> bool(model.iwae(x, num_samples=10).le(0).all())
        True
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
        self.encoder = encoder if encoder is not None else mlp([data_dim, hidden, 2 * latent_dim])
        self.decoder = decoder if decoder is not None else mlp([latent_dim, hidden, data_dim])
        self.likelihood = make_likelihood(likelihood, data_dim) if isinstance(likelihood, str) else likelihood
        if isinstance(flow, str):
            import flows

            flow = flows.build(flow, manifold, latent_dim, layers=flow_layers, hidden=flow_hidden,
                               share_manifold=True)
        check_flow_manifold(flow, manifold)
        self.flow = flow

    # -- the three distributions -------------------------------------------------------------------------
    def prior(self) -> WrappedNormal:
        """``WrappedNormal(o, I)`` on the latent manifold (dtype and device of the model), declared at the origin
        (:meth:`~manifolds.WrappedNormal.at_origin`; the origin ``exp_o(0)`` stays differentiable in a learnable
        curvature)."""
        ref = next(self.parameters())
        return WrappedNormal.at_origin(torch.ones(self.latent_dim, dtype=ref.dtype, device=ref.device), self.manifold)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 1 or x.size(-1) != self.data_dim:
            raise ValueError(
                f"input has {x.size(-1) if x.dim() else 0} features in its last dimension (shape "
                f"{tuple(x.shape)}), but this VAE was built with data_dim={self.data_dim}"
            )

    def encode(self, x: Tensor) -> WrappedNormal:
        """The base posterior ``q₀(z₀ | x)``."""
        self._check_input(x)
        out = self.encoder(x)
        n = self.latent_dim
        if out.size(-1) != 2 * n:
            raise ValueError(
                f"the encoder returned {out.size(-1)} outputs per input; it must return 2·latent_dim = {2 * n} "
                "(tangent means, then pre-softplus scales)"
            )
        mean, raw_scale = out[..., :n], out[..., n:]
        if self.max_tangent_norm is not None:
            mean = bound_tangent(mean, self.max_tangent_norm)
        scale = nn.functional.softplus(raw_scale) + MIN_SCALE
        return WrappedNormal(self.manifold.expmap0_spatial(mean), scale, self.manifold)

    def decode(self, z: Tensor) -> torch.distributions.Distribution:
        """``p(x | z)`` for latent points ``z`` (ambient coordinates); the decoder sees ``log_o(z)``."""
        return self.decode_tangent(self.manifold.logmap0_spatial(z))

    def decode_tangent(self, w: Tensor) -> torch.distributions.Distribution:
        """``p(x | z)`` for latents given by their tangent coordinates ``w = log_o(z)`` at the origin."""
        return self.likelihood.distribution(self.decoder(w))

    # -- posterior sampling --------------------------------------------------------------------------------
    def sample_posterior_tangent(self, q0: WrappedNormal, sample_shape: torch.Size = torch.Size()
                                 ) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_K, log q₀(z₀|x), log|det ∂f/∂z₀|)`` for reparameterised ``z₀ ~ q₀``, ``z_K = f(z₀)``, with the latents
        as tangent coordinates ``w_K = log_o(z_K)``: the draw (:meth:`~manifolds.WrappedNormal.
        rsample_logmap0_and_log_prob`) and the flow (:meth:`~flows.Transform.forward_tangent`) work in them, so no
        ``exp_o`` / ``log_o`` pair is evaluated in between (flows that do not act in tangent coordinates map
        points)."""
        latent = FlowDistribution(q0, self.flow).rsample_latent(sample_shape)
        return latent.tangents(), latent.log_q0, latent.ladj

    def sample_posterior(self, q0: WrappedNormal, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor,
                                                                                                     Tensor]:
        """``(z_K, log q₀(z₀|x), log|det ∂f/∂z₀|)`` for reparameterised ``z₀ ~ q₀``, ``z_K = f(z₀)`` (points)."""
        wk, log_q0, ladj = self.sample_posterior_tangent(q0, sample_shape)
        return self.manifold.expmap0_spatial(wk), log_q0, ladj

    # -- objectives ----------------------------------------------------------------------------------------
    def elbo(self, x: Tensor) -> ELBOTerms:
        r"""Single-sample ELBO terms (MATH.md §5), nothing added:
        ``ELBO = log p(x|z_K) + log p(z_K) - log q₀(z₀|x) + log|det ∂f/∂z₀|`` (computed in tangent coordinates)."""
        wk, log_q0, ladj = self.sample_posterior_tangent(self.encode(x))
        return ELBOTerms(self.decode_tangent(wk).log_prob(x), self.prior().log_prob_logmap0(wk), log_q0, ladj)

    def loss(self, x: Tensor) -> Tensor:
        """``-mean ELBO`` over the batch, for minimisation."""
        return -self.elbo(x).elbo.mean()

    def log_weights(self, x: Tensor, num_samples: int) -> Tensor:
        r"""Importance log-weights ``log p(x|z_K) + log p(z_K) - log q(z_K|x)``, shape ``(num_samples, batch)``."""
        q0 = self.encode(x)
        wk, log_q0, ladj = self.sample_posterior_tangent(q0, torch.Size([num_samples]))
        return self.decode_tangent(wk).log_prob(x) + self.prior().log_prob_logmap0(wk) - log_q0 + ladj

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
