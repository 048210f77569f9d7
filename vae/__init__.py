"""Variational autoencoders with a manifold latent space and optional flow posteriors (Bose et al. 2020).

* :class:`VAE` — one VAE for ``Euclidean`` or ``Lorentz`` latents (with a flow: the paper's NC, TC, WHC;
  the flow's registry name says which); :func:`elbo`, :func:`iwae_bound`,
  :func:`evaluate_log_likelihood` are the objectives of MATH.md §5; :class:`CurvatureSchedule` is the fixed /
  learnable / warm-up curvature.
* :mod:`vae.graph` — graph VAE for link prediction (paper §4.2).
* :mod:`vae.embedding` — :class:`HyperbolicEmbedding`, the classic baseline: a point per node on the Poincaré ball
  or the hyperboloid trained by Nickel & Kiela's ranking loss (geoopt's RiemannianAdam).
* :mod:`vae.generation` and :mod:`vae.graph_metrics` — two-stage graph generator and its metrics (§4.3).

Example:
    >>> import torch
    >>> from manifolds import Lorentz
    >>> from vae import VAE
    >>> model = VAE(Lorentz(), data_dim=8, latent_dim=2, hidden=16, flow="whc")
    >>> model.loss(torch.bernoulli(torch.full((5, 8), 0.5))).dim()
    0
"""

from __future__ import annotations

from . import constants
from .curvature import CurvatureSchedule
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from .model import VAE, ELBOTerms, bound_tangent
from .objectives import elbo, evaluate_log_likelihood, iwae_bound
from .graph import (EdgeDecoder, EdgeSplit, FermiDiracDecoder, GraphVAE, InnerProductDecoder, MessageGraph, NonEdgeSampler,
                    prepare_edge_index, split_edges)
from .embedding import HyperbolicEmbedding

# the graph generator and its metrics need networkx (the [graph] extra): imported on first use, so that
# `import vae` works with the core requirements
_LAZY = {"DistanceDecoder": "generation", "FlowPrior": "generation", "GraphAutoEncoder": "generation",
         "GraphGenerator": "generation", "generation_metrics": "graph_metrics", "is_lobster": "graph_metrics",
         "is_tree": "graph_metrics"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "VAE",
    "ELBOTerms",
    "bound_tangent",
    "elbo",
    "iwae_bound",
    "evaluate_log_likelihood",
    "CurvatureSchedule",
    "MessageGraph",
    "NonEdgeSampler",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "constants",
    "GraphVAE",
    "HyperbolicEmbedding",
    "EdgeSplit",
    "split_edges",
    "prepare_edge_index",
    "EdgeDecoder",
    "InnerProductDecoder",
    "FermiDiracDecoder",
    "GraphAutoEncoder",
    "DistanceDecoder",
    "FlowPrior",
    "GraphGenerator",
    "generation_metrics",
    "is_tree",
    "is_lobster",
]
