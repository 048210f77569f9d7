"""Riemannian manifolds for flows: flat ℝⁿ and the Lorentz (hyperboloid) model, and the wrapped normal.

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
from .wrapped_normal import WrappedNormal

__all__ = ["Euclidean", "Lorentz", "ManifoldOps", "WrappedNormal", "constants", "lorentz_math", "set_validation",
           "validation", "validation_enabled"]
