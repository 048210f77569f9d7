"""The paper's five models: their names from the command-line options ``--model`` and ``--flow``, the latent
manifold, and :func:`paper_model` (one of them as a :class:`vae.VAE`); and ``--model embedding``, the classic
baseline of graph-recon (:class:`vae.embedding.HyperbolicEmbedding`, on the manifold :func:`embedding_manifold`
makes)."""

from __future__ import annotations

from manifolds import Euclidean, Lorentz, PoincareBall, Sphere, parse_product
from vae import VAE, Likelihood
from vae.constants import FLOW_HIDDEN, FLOW_LAYERS, WARMUP_START_RADIUS

#: the ``--model`` names; besides them ``product:<spec>`` (a :func:`manifolds.parse_product` spec, e.g.
#: ``product:h2,s2``): :func:`check_model` accepts both
MODELS = ("euclidean", "hyperbolic", "spherical", "poincare", "embedding")
PRODUCT_PREFIX = "product:"
#: ``--model embedding``: no VAE, one point per node trained by a ranking loss (graph-recon only)
EMBEDDING = "embedding"
#: ``--embedding-manifold`` -> the ``--model`` name of that latent space (the Poincaré ball; the hyperboloid)
EMBEDDING_MANIFOLDS: dict[str, str] = {"poincare": "poincare", "lorentz": "hyperbolic"}

#: (model, flow) -> the paper's name of its five VAEs
PAPER_NAMES = {("euclidean", "none"): "N-VAE", ("hyperbolic", "none"): "H-VAE", ("euclidean", "nc"): "NC",
               ("hyperbolic", "tc"): "TC", ("hyperbolic", "whc"): "WHC"}
#: the names tables give to models that are not the paper's VAEs (the embedding baseline of the main job)
OTHER_NAMES = {(EMBEDDING, "none"): "Embed"}

#: the paper's name -> (model, flow): the five VAEs (:func:`paper_model` builds each)
BY_PAPER_NAME = {v: k for k, v in PAPER_NAMES.items()}


def paper_name(model: str, flow: str) -> str:
    """The name a table gives the model: the paper's (``"WHC"``), ``"Embed"`` for the embedding baseline, else
    ``"<model>+<flow>"``."""
    return PAPER_NAMES.get((model, flow)) or OTHER_NAMES.get((model, flow), f"{model}+{flow}")


def curvature_record(manifold) -> dict[str, float]:
    """What a run records of its latent manifold's curvature: ``k`` (curvature ``-1/k``) on a hyperbolic manifold,
    nothing on a flat one, ``curvature`` on a curved one, ``curvature_<i>`` per factor on a product of mixed signs
    (read on the host: evaluation time only)."""
    sign = manifold.curvature_sign
    if sign == 0:
        return {}
    c = manifold.curvature().detach().reshape(-1)
    if c.numel() > 1:  # a product: one curvature per factor
        return {f"curvature_{i}": float(ci) for i, ci in enumerate(c)}
    return {"k": -1.0 / float(c)} if sign == -1 else {"curvature": float(c)}


def check_model(model: str) -> str:
    """``model`` if it names a latent space (:data:`MODELS`, or ``product:<spec>`` with a spec that
    :func:`manifolds.parse_product` reads), else a one-line ``ValueError`` saying what to write.

    Example:
        >>> check_model("product:h2,s2")
        'product:h2,s2'
        >>> check_model("product:h2;s2")
        Traceback (most recent call last):
        ...
        ValueError: --model product:h2;s2: cannot parse the product spec 'h2;s2' at 'h2;s2': write comma-separated factors such as 'h2,s2,e2' or 'lorentz:2,sphere:2' (names: ball, e, euclidean, h, hyperboloid, lorentz, p, poincare, r, s, sphere, t, torus)
    """
    if model in MODELS:
        return model
    if model.startswith(PRODUCT_PREFIX):
        try:
            parse_product(model[len(PRODUCT_PREFIX):])
        except ValueError as err:
            raise ValueError(f"--model {model}: {err}") from None
        return model
    raise ValueError(f"--model must be one of {', '.join(MODELS)} or product:<spec> (e.g. product:h2,s2); "
                     f"got {model!r}")


def model_latent_dim(model: str) -> int | None:
    """The latent dimension a model fixes (a product's: the sum of its factors'), or ``None`` where any works."""
    if model.startswith(PRODUCT_PREFIX):
        return parse_product(model[len(PRODUCT_PREFIX):]).dim
    return None


def make_manifold(model: str, *, k: float | None = None, dim: int | None = None):
    """ℝⁿ for ``euclidean``; the hyperboloid for ``hyperbolic`` and the Poincaré ball for ``poincare``, starting at
    the warm-up radius ``R = 11`` (``k = R²``) unless ``k`` is given; the unit sphere Sⁿ for ``spherical``
    (``n = dim``); the product of ``product:<spec>`` (:func:`manifolds.parse_product`; its factors keep their
    default curvatures), whose dimension must be ``dim`` where ``dim`` is given."""
    check_model(model)
    if model == EMBEDDING:
        raise ValueError("--model embedding has no single latent space: its manifold is --embedding-manifold "
                         "(experiments.models.embedding_manifold)")
    if model == "euclidean":
        return Euclidean()
    if model == "hyperbolic":
        return Lorentz(k=WARMUP_START_RADIUS ** 2 if k is None else k)
    if model == "poincare":
        return PoincareBall(k=WARMUP_START_RADIUS ** 2 if k is None else k)
    if model == "spherical":
        return Sphere(dim)
    product = parse_product(model[len(PRODUCT_PREFIX):])
    if dim is not None and dim != product.dim:
        raise ValueError(f"--model {model} has dimension {product.dim} ({' + '.join(map(str, product.dims))}) but "
                         f"--latent-dim is {dim}: pass --latent-dim {product.dim} or leave it out")
    return product


def embedding_manifold(name: str, radius: float):
    """The manifold of ``--model embedding --embedding-manifold name`` at curvature radius ``radius`` (``k = R²``,
    fixed: an embedding's points live on one manifold from the first step to the last, so there is no warm-up).

    Example:
        >>> embedding_manifold("lorentz", 1.0)
        Lorentz(k=1, learnable=False) manifold
    """
    if name not in EMBEDDING_MANIFOLDS:
        raise ValueError(f"--embedding-manifold must be one of {', '.join(EMBEDDING_MANIFOLDS)}; got {name!r}")
    return make_manifold(EMBEDDING_MANIFOLDS[name], k=radius * radius)


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
