"""The paper's five models: their names from the command-line options ``--model`` and ``--flow``, the latent
manifold, and :func:`paper_model` (one of them as a :class:`vae.VAE`)."""

from __future__ import annotations

from manifolds import Euclidean, Lorentz
from vae import VAE, Likelihood
from vae.constants import FLOW_HIDDEN, FLOW_LAYERS, WARMUP_START_RADIUS

MODELS = ("euclidean", "hyperbolic")

#: (model, flow) -> the paper's name
PAPER_NAMES = {("euclidean", "none"): "N-VAE", ("hyperbolic", "none"): "H-VAE", ("euclidean", "nc"): "NC",
               ("hyperbolic", "tc"): "TC", ("hyperbolic", "whc"): "WHC"}

#: the paper's name -> (model, flow)
BY_PAPER_NAME = {v: k for k, v in PAPER_NAMES.items()}


def paper_name(model: str, flow: str) -> str:
    return PAPER_NAMES.get((model, flow), f"{model}+{flow}")


def curvature_record(manifold) -> dict[str, float]:
    """What a run records of its latent manifold's curvature: ``k`` (curvature ``-1/k``) on a hyperbolic manifold,
    nothing on a flat one, ``curvature`` otherwise (read on the host: evaluation time only)."""
    sign = manifold.curvature_sign
    if sign == 0:
        return {}
    c = float(manifold.curvature().detach())
    return {"k": -1.0 / c} if sign == -1 else {"curvature": c}


def make_manifold(model: str, *, k: float | None = None):
    """ℝⁿ for ``euclidean``; the hyperboloid for ``hyperbolic``, starting at the warm-up radius ``R = 11``
    (``k = R²``) unless ``k`` is given."""
    if model == "euclidean":
        return Euclidean()
    if model == "hyperbolic":
        return Lorentz(k=WARMUP_START_RADIUS ** 2 if k is None else k)
    raise ValueError(f"--model must be one of {MODELS}; got {model!r}")


def paper_model(name: str, data_dim: int, latent_dim: int, *, k: float = 1.0, learnable_curvature: bool = False,
                hidden: int = 200, likelihood: str | Likelihood = "bernoulli", flow_layers: int = FLOW_LAYERS,
                flow_hidden: int = FLOW_HIDDEN) -> VAE:
    r"""One of the paper's five models as a :class:`~vae.VAE`: ``"N-VAE"`` (ℝⁿ, no flow), ``"H-VAE"`` (Hⁿ, no flow),
    ``"NC"`` (ℝⁿ + affine coupling), ``"TC"`` (Hⁿ + tangent coupling), ``"WHC"`` (Hⁿ + wrapped hyperboloid
    coupling). Names are case-insensitive (``"nvae"``, ``"h_vae"`` work too).

    Example:
        >>> m = paper_model("h-vae", data_dim=50, latent_dim=2)
        >>> type(m.manifold).__name__, m.flow is None
        ('Lorentz', True)
    """
    key = name.upper().replace("_", "-")
    key = {"NVAE": "N-VAE", "HVAE": "H-VAE"}.get(key, key)
    if key not in BY_PAPER_NAME:
        raise ValueError(f"unknown paper model {name!r}; choose one of {', '.join(BY_PAPER_NAME)}")
    model, flow = BY_PAPER_NAME[key]
    manifold = Euclidean() if model == "euclidean" else Lorentz(k=k, learnable=learnable_curvature)
    return VAE(manifold, data_dim, latent_dim, hidden=hidden, flow=None if flow == "none" else flow,
               flow_layers=flow_layers, flow_hidden=flow_hidden, likelihood=likelihood)
