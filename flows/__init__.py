"""Normalizing flows on ℝⁿ and on the hyperboloid with exact log-determinants in both directions.

Every transform maps base → data: ``forward(x, context=None) -> (y, log|det ∂y/∂x|)`` and
``inverse(y, context=None) -> (x, log|det ∂x/∂y|)``. :func:`build` makes any registered flow by name;
:class:`Flow` (an ``nn.Module``) holds a base distribution and a transform and, called with a context (or nothing), returns
the :class:`FlowDistribution` (a ``torch.distributions.Distribution``).

Example:
    >>> import torch
    >>> from manifolds import Lorentz, WrappedNormal
    >>> from flows import Flow, build
    >>> M = Lorentz(k=1.0)
    >>> q = Flow(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, dim=2, layers=4))
    >>> q.sample((10,)).shape
    torch.Size([10, 3])
"""

from .conditioners import GraphConditioner, MLPConditioner, make_conditioner
from .continuous import ContinuousFlow, TimeMLP
from .coupling import (AdditiveCoupling, AdditiveHalf, AffineCoupling, AffineHalf, Coupling, CouplingHalf,
                       HyperboloidHalf, TangentCoupling, WrappedHyperboloidCoupling, bounded_log_scale)
from .distribution import DistributionModule, Flow, FlowDistribution, Latent
from .linear import ActNorm, Permutation
from .registry import LIFT_SUFFIX, available, build, describe, lift_to, register
from .splines import SplineCoupling, SplineHalf, rational_quadratic_spline
from .circular import AngleConditioner, CircleTransform, CircularSplineHalf, MobiusHalf, TorusCoupling
from .sphere import SphereSplineCoupling
from .autoregressive import IAF, MADE, MAF, MaskedAutoregressive
from .surjective import AbsSurjection, FoldedDistribution, SortSurjection, SymmetrySurjection
from .diagnostics import gaussian_optimum_nll
from .linear_lu import LULinear, QRLinear, householder
from .planar import Planar, Radial, Sylvester, solve_tanh_equation
from .residual import InvertibleResidual, SpectralCap, logdet_power_series
from .rfm import LorentzVectorField, RiemannianFlow, flow_matching_loss, ot_pairing, riemannian_divergence
from .rfm import AmbientRiemannianFlow, TangentVectorField, geodesic_path
from .transform import IsometricTransform
from .registry import on_any, on_class, on_global_chart, on_rn, why_not
from .selfnorm import SelfNormConv2d, SelfNormLinear, self_normalizing, self_normalizing_objective
from .transform import Compose, TangentSpaceTransform, Transform

__all__ = [
    "ActNorm", "AffineCoupling", "AffineHalf", "Compose", "Coupling", "CouplingHalf", "Flow", "GraphConditioner",
    "HyperboloidHalf", "MLPConditioner", "Permutation", "TangentCoupling", "TangentSpaceTransform", "Transform",
    "WrappedHyperboloidCoupling", "available", "bounded_log_scale", "build", "describe", "make_conditioner",
    "register", "lift_to", "LIFT_SUFFIX",
    "AbsSurjection", "SortSurjection", "SymmetrySurjection", "FoldedDistribution", "gaussian_optimum_nll",
    "ContinuousFlow", "TimeMLP",
    "AdditiveCoupling", "AdditiveHalf", "SplineCoupling", "SplineHalf", "rational_quadratic_spline", "MADE", "MAF",
    "IAF", "MaskedAutoregressive",
    "LULinear", "QRLinear", "householder", "Planar", "Radial", "Sylvester", "solve_tanh_equation",
    "InvertibleResidual", "SpectralCap", "logdet_power_series",
    "LorentzVectorField", "RiemannianFlow", "flow_matching_loss", "ot_pairing", "riemannian_divergence",
    "AmbientRiemannianFlow", "TangentVectorField", "geodesic_path", "IsometricTransform",
    "on_any", "on_class", "on_global_chart", "on_rn", "why_not",
    "SelfNormConv2d", "SelfNormLinear", "self_normalizing", "self_normalizing_objective",
    "AngleConditioner", "CircleTransform", "CircularSplineHalf", "MobiusHalf", "TorusCoupling",
    "SphereSplineCoupling",
    "FlowDistribution", "DistributionModule", "Latent",
]
