"""Riemannian manifolds for flows: ℝⁿ, the hyperboloid, the Poincaré ball, the sphere, the torus and their products,
with their distributions (wrapped normals, uniform laws, von Mises–Fisher).

Example:
    >>> import torch
    >>> from manifolds import Lorentz, WrappedNormal
    >>> M = Lorentz(k=1.0)
    >>> z = WrappedNormal(M.origin(3), torch.full((2,), 0.5), M).sample((4,))
    >>> bool(M.check_point_on_manifold(z))
    True
"""

from . import constants, lorentz_math
from .validation import set_validation, validation, validation_enabled
from .base import ManifoldOps
from .euclidean import Euclidean
from .lorentz import Lorentz
from .lorentz_math import lorentz_to_poincare, poincare_to_lorentz
from .poincare import PoincareBall
from .sphere import Sphere
from .torus import Torus
from .product import Product, parse_product
from .uniform import UniformOnManifold
from .wrapped_normal import WrappedNormal
from .poincare_distributions import PoincareWrappedNormal
from .preimage_wrapped_normal import PreimageWrappedNormal
from .sphere_distributions import SphereWrappedNormal, VonMisesFisher
from .torus_distributions import TorusWrappedNormal
from .product_distributions import ProductDistribution, ProductWrappedNormal

__all__ = ["Euclidean", "Lorentz", "ManifoldOps", "PoincareBall", "PoincareWrappedNormal", "PreimageWrappedNormal",
           "Product", "ProductDistribution", "ProductWrappedNormal", "Sphere", "SphereWrappedNormal", "Torus",
           "TorusWrappedNormal", "UniformOnManifold", "VonMisesFisher", "WrappedNormal", "constants",
           "lorentz_math", "lorentz_to_poincare", "parse_product", "poincare_to_lorentz", "set_validation",
           "validation", "validation_enabled"]
