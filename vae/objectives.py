"""Variational objectives (MATH.md §5): the single-sample ELBO and the IWAE estimate of ``log p(x)``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .constants import IWAE_MAX_SAMPLES_PER_CHUNK, IWAE_SAMPLES

Tensor = torch.Tensor


def elbo(model, x: Tensor) -> Tensor:
    r"""Single-sample ELBO per input (MATH.md §5), with the flow's log-determinant and nothing else:

    ``ELBO = log p(x|z_K) + log p(z_K) - log q₀(z₀|x) + log|det ∂f/∂z₀|``,  ``z₀ ~ q₀(·|x)``, ``z_K = f(z₀)``.

    Example:
        >>> from manifolds import Euclidean
        >>> from vae import VAE
        >>> m = VAE(Euclidean(), data_dim=4, latent_dim=2, hidden=8)
        >>> elbo(m, torch.zeros(3, 4)).shape
        torch.Size([3])
    """
    return model.elbo(x).elbo


def iwae_bound(model, x: Tensor, num_samples: int = IWAE_SAMPLES, chunk_size: int | None = None) -> Tensor:
    r"""IWAE bound per input with ``K = num_samples`` importance samples (Burda et al. 2016):

    ``L_K(x) = log (1/K) Σ_k exp(log p(x|z_K⁽ᵏ⁾) + log p(z_K⁽ᵏ⁾) - log q(z_K⁽ᵏ⁾|x))``,
    ``log q(z_K|x) = log q₀(z₀|x) - log|det ∂f/∂z₀|``.

    The ``K`` samples are drawn ``chunk_size`` at a time (default: as many as keep ``chunk × batch`` below
    :data:`~vae.constants.IWAE_MAX_SAMPLES_PER_CHUNK`) and combined with a running ``logaddexp``, so memory
    does not grow with ``K``. ``L_1`` is the ELBO in expectation, and ``L_K ↑ log p(x)`` as ``K → ∞``.

    Example:
        >>> from manifolds import Lorentz
        >>> from vae import VAE
        >>> m = VAE(Lorentz(), data_dim=4, latent_dim=2, hidden=8)
        >>> iwae_bound(m, torch.zeros(3, 4), num_samples=20, chunk_size=7).shape
        torch.Size([3])
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (K) must be >= 1; got {num_samples}")
    batch = max(1, x[..., 0].numel())
    if chunk_size is None:
        chunk_size = max(1, IWAE_MAX_SAMPLES_PER_CHUNK // batch)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    total: Tensor | None = None
    done = 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        part = torch.logsumexp(model.log_weights(x, k), dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        done += k
    return total - math.log(num_samples)


@torch.no_grad()
def evaluate_log_likelihood(
    model,
    data: Tensor | Iterable[Tensor],
    num_samples: int = IWAE_SAMPLES,
    *,
    batch_size: int = 100,
    chunk_size: int | None = None,
) -> Tensor:
    r"""IWAE test log-likelihood of **every** example of ``data`` (paper: ``K = 500``), as a 1-d tensor.

    ``data`` is a tensor (split into batches of ``batch_size``) or an iterable of batches (e.g. a
    ``DataLoader`` over the whole test set; a ``(x, label)`` tuple uses its first element). Report
    ``result.mean()``. The model is put in eval mode for the call and restored afterwards.

    Example:
        >>> from manifolds import Euclidean
        >>> from vae import VAE
        >>> m = VAE(Euclidean(), data_dim=4, latent_dim=2, hidden=8)
        >>> evaluate_log_likelihood(m, torch.zeros(5, 4), num_samples=10, batch_size=2).shape
        torch.Size([5])
    """
    batches = data.split(batch_size) if torch.is_tensor(data) else data
    was_training = model.training
    model.eval()
    try:
        out = []
        for b in batches:
            if isinstance(b, (tuple, list)):
                b = b[0]
            out.append(iwae_bound(model, b, num_samples, chunk_size))
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("evaluate_log_likelihood got an empty data set")
    return torch.cat(out)
