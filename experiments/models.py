"""The paper's model names from the command-line options ``--model`` and ``--flow``, and the latent manifold."""

from __future__ import annotations

from manifolds import Euclidean, Lorentz
from vae.constants import WARMUP_START_RADIUS

MODELS = ("euclidean", "hyperbolic")

#: (model, flow) -> the paper's name
PAPER_NAMES = {("euclidean", "none"): "N-VAE", ("hyperbolic", "none"): "H-VAE", ("euclidean", "nc"): "NC",
               ("hyperbolic", "tc"): "TC", ("hyperbolic", "whc"): "WHC"}

#: the paper's name -> (model, flow)
BY_PAPER_NAME = {v: k for k, v in PAPER_NAMES.items()}


def paper_name(model: str, flow: str) -> str:
    return PAPER_NAMES.get((model, flow), f"{model}+{flow}")


def make_manifold(model: str, *, k: float | None = None):
    """ℝⁿ for ``euclidean``; the hyperboloid for ``hyperbolic``, starting at the warm-up radius ``R = 11``
    (``k = R²``) unless ``k`` is given."""
    if model == "euclidean":
        return Euclidean()
    if model == "hyperbolic":
        return Lorentz(k=WARMUP_START_RADIUS ** 2 if k is None else k)
    raise ValueError(f"--model must be one of {MODELS}; got {model!r}")
