"""Shared helpers for the flow tests: the (flow, manifold, dim) grid, parameter randomisation, and the
tangent-coordinate Jacobian log-det of ``MATH.md`` §4 ("How to check any log-det").

* A test that takes the argument ``flow_case`` is run once per ``(name, manifold, dim)`` for EVERY name in
  ``flows.available()``, on every manifold of :data:`MANIFOLDS` it applies to, for dims 2, 3, 5 (so flows
  registered later are covered automatically). ``surjection_case`` is ``(name, manifold)`` for the flows with
  ``bijective = False`` only (n = 2).
* The helpers are handed to test modules as the ``fh`` fixture (under ``--import-mode=importlib`` test
  modules cannot import each other or this file).
* Every test is deterministic: the root ``conftest.py`` seeds torch before each test, data come from explicit
  generators, and torch runs one intra-op thread (tiny ops on a shared 2-core machine run far slower with two
  spin-waiting threads).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Optional

import pytest
import torch
from torch import nn

import flows
from manifolds import Euclidean, Lorentz, Sphere, Torus

Tensor = torch.Tensor
F64 = torch.float64

#: intrinsic dimensions every flow is tested in (2 = smallest coupling, 3 = odd, 5 = odd and unequal halves)
DIMS = (2, 3, 5)

#: manifolds of the suite, float64; each flow is tested on those it applies to (``flows.available(M)``)
MANIFOLDS: dict[str, Callable[[], object]] = {
    "R": lambda: Euclidean(),
    "H_k1": lambda: Lorentz(k=torch.tensor(1.0, dtype=F64)),
    "H_k0.5": lambda: Lorentz(k=torch.tensor(0.5, dtype=F64)),
    "T": lambda: Torus(),
    "S2": lambda: Sphere(2),  # a manifold of fixed dimension is tested in that dimension only
}

#: width of the conditioners in the property tests (small: the tests check maths, not capacity)
HIDDEN = 16


#: the paper's flows (issue 3) get the full grid: dims 2, 3, 5 on every manifold they apply to
FULL_GRID = frozenset({"nc", "tc", "whc"})
#: dims for every other family: the smallest coupling and an odd dimension
FAMILY_DIMS = (2, 3)
#: families whose every evaluation is an ODE solve (seconds per Jacobian): one odd dimension
ODE_FLOWS = frozenset({"cnf", "cnf@lorentz", "rfm"})
ODE_DIMS = (3,)


def flow_cases(dims=DIMS) -> list:
    """``pytest.param(name, manifold_id, dim)`` for every registered flow, on every manifold it applies to.

    To keep the suite inside CI's budget, flows other than NC/TC/WHC are checked on the curvature k = 0.5 only
    (a k ≠ 1 catches every curvature error that k = 1 would, and more) and in :data:`FAMILY_DIMS`
    (:data:`ODE_DIMS` for ODE flows); NC/TC/WHC keep the full grid.
    """
    cases = []
    for name in flows.available():
        for mid, make in MANIFOLDS.items():
            if name not in flows.available(make()):
                continue
            use = dims
            if name not in FULL_GRID and dims == DIMS:
                if mid == "H_k1":
                    continue
                use = ODE_DIMS if name in ODE_FLOWS else FAMILY_DIMS
            fixed = make().dim
            for dim in use if fixed is None else (fixed,):
                cases.append(pytest.param(name, mid, dim, id=f"{name}-{mid}-n{dim}"))
    return cases


def surjection_cases(dim: int = 2) -> list:
    """``pytest.param(name, manifold_id)`` for every registered flow with ``bijective = False`` (SurVAE surjections),
    on every manifold it applies to, in dimension ``dim``: their ``ladj`` is a likelihood contribution, not a
    Jacobian log-det, so ``test_flow_density`` checks it by integrating the density instead."""
    cases = []
    for c in flow_cases(dims=(dim,)):
        name, mid, _ = c.values
        if not flows.build(name, MANIFOLDS[mid](), dim, hidden=HIDDEN).bijective:
            cases.append(pytest.param(name, mid, id=f"{name}-{mid}"))
    return cases


def make_flow(name: str, mid: str, dim: int, layers: int = 2, hidden: int = HIDDEN, randomize: bool = True,
              gain: float = 1.5, **kwargs):
    """A float64 flow ``name`` on a fresh manifold ``mid``; returns ``(manifold, flow)``."""
    M = MANIFOLDS[mid]()
    f = flows.build(name, M, dim, layers=layers, hidden=hidden, **kwargs).double()
    if randomize:
        randomize_(f, gain=gain)
    return M, f


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


@torch.no_grad()
def randomize_(module: nn.Module, gain: float = 1.5, bias_std: float = 0.5, seed: int = 1234) -> nn.Module:
    """Overwrite every trainable parameter with random values of a size that makes the flow non-trivial.

    Weights (``dim >= 2``) get ``N(0, gain²/fan_in)``, so every layer's outputs, including the final
    conditioner layer that the library initialises near zero, are O(gain): log-scales O(1) and translations
    that are not tiny. Vectors (biases, ActNorm parameters) get ``N(0, bias_std²)``. The manifold's curvature
    is not trainable here and is left alone.
    """
    g = torch.Generator().manual_seed(seed)
    for _, p in trainable(module):
        if p.dim() >= 2:
            std = gain / math.sqrt(p.shape[-1])
        else:
            std = bias_std
        p.copy_(torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype) * std)
    return module


def tangent_points(n: int, norms, seed: int = 0, dtype=F64) -> Tensor:
    """Tangent coordinates at the origin with the given norms and random directions, shape ``(len(norms), n)``."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(len(norms), n, generator=g, dtype=F64)
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    return (d * torch.as_tensor(norms, dtype=F64).unsqueeze(-1)).to(dtype)


#: ‖w‖ ≤ 1 ("near") and ‖w‖ ≈ 10 ("far") test points of MATH.md §4
NEAR_NORMS = (1e-3, 0.05, 0.3, 0.7, 1.0)
FAR_NORMS = (9.5, 10.0, 10.0, 10.5)


def tangent_map(M, fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``w ↦ log_o(fn(exp_o(w)))``: a map of tangent coordinates at the origin."""
    return lambda w: M.logmap0_spatial(fn(M.expmap0_spatial(w)))


def riemannian_logdet(M, fn: Callable[[Tensor], Tensor], w: Tensor) -> Tensor:
    """Brute-force Riemannian log-det of ``fn`` at ``exp_o(w)`` for ONE point ``w`` of shape ``(..., n)``.

    All rows of ``w`` together form the point (a graph's node latents, or a single ``(1, n)`` row): the
    full ``(N·n)×(N·n)`` autograd Jacobian ``J`` of ``w ↦ log_o(fn(exp_o(w)))`` is taken, and
    ``log|det J| + Σ_rows ℓ(log_o fn(exp_o w)) - ℓ(w)`` returned, ``ℓ = M.expmap0_logdet`` (``(n-1)ℓ(‖w‖)`` on isotropic
    manifolds, MATH.md §4; the factors' sum on a product).
    """
    g = tangent_map(M, fn)
    w = w.detach()
    J = torch.autograd.functional.jacobian(g, w)
    J = J.reshape(w.numel(), w.numel())
    y = g(w).detach()
    _, logabs = torch.linalg.slogdet(J)
    return logabs + (M.expmap0_logdet(y) - M.expmap0_logdet(w)).sum()  # a product: the factors' terms


def batched_riemannian_logdet(M, fn: Callable[[Tensor], Tensor], w: Tensor) -> Tensor:
    """:func:`riemannian_logdet` for each row of ``w`` (shape ``(B, n)``) separately; returns shape ``(B,)``."""
    return torch.stack([riemannian_logdet(M, fn, w[i:i + 1]) for i in range(w.size(0))])


def couplings(f: nn.Module) -> list[flows.Coupling]:
    """The coupling layers of ``f`` in the order they act (forward direction)."""
    return [m for m in f.modules() if isinstance(m, flows.Coupling)]


def ambient(M, n: int) -> int:
    return M.ambient_dim(n)


def base_distribution(M, n: int, loc_coords: Optional[Tensor] = None, scale: Optional[Tensor] = None):
    """A wrapped normal on ``M`` (the ordinary normal on ℝⁿ), float64."""
    from manifolds import WrappedNormal

    loc = M.expmap0_spatial(torch.zeros(n, dtype=F64) if loc_coords is None else loc_coords.to(F64))
    return WrappedNormal(loc, torch.ones(n, dtype=F64) if scale is None else scale.to(F64), M)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "flow_case" in metafunc.fixturenames:
        cases = flow_cases()
        metafunc.parametrize("flow_case", [c.values for c in cases], ids=[c.id for c in cases])
    if "surjection_case" in metafunc.fixturenames:
        cases = surjection_cases()
        metafunc.parametrize("surjection_case", [c.values for c in cases], ids=[c.id for c in cases])


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fh() -> SimpleNamespace:
    """The helpers above, for the test modules."""
    return SimpleNamespace(
        F64=F64, DIMS=DIMS, MANIFOLDS=MANIFOLDS, HIDDEN=HIDDEN, NEAR_NORMS=NEAR_NORMS, FAR_NORMS=FAR_NORMS,
        flow_cases=flow_cases, surjection_cases=surjection_cases, make_flow=make_flow, trainable=trainable,
        randomize_=randomize_,
        tangent_points=tangent_points, tangent_map=tangent_map, riemannian_logdet=riemannian_logdet,
        batched_riemannian_logdet=batched_riemannian_logdet, couplings=couplings, ambient=ambient,
        base_distribution=base_distribution,
    )
