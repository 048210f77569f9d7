"""geoopt interoperability of the new manifolds: ``ManifoldParameter`` + ``RiemannianAdam`` / ``RiemannianSGD``
reach a known minimiser (the Fréchet mean of one point: the point itself) on each manifold."""

from __future__ import annotations

import geoopt
import pytest
import torch

from manifolds import Euclidean, Lorentz, PoincareBall, Product, Sphere, Torus


def _cases():
    return {
        "sphere": (Sphere(2, radius=2.0), torch.tensor([0.0, 2.0, 0.0]), torch.tensor([2.0, 0.0, 0.0])),
        "torus": (Torus(2), torch.tensor([3.0, -3.0]), torch.tensor([-3.0, 2.5])),  # across the chart edges
        "ball": (PoincareBall(2.0), torch.tensor([0.0, 0.0]), torch.tensor([1.2, -0.6])),
        "product": (Product(Sphere(2), Torus(1), Lorentz(dim=2), Euclidean(dim=1), PoincareBall(dim=2)),
                    None, None),
    }


@pytest.mark.parametrize("optim", ["adam", "sgd"])
@pytest.mark.parametrize("name", ["sphere", "torus", "ball", "product"])
def test_riemannian_optimisers_converge(name, optim):
    M, start, target = _cases()[name]
    if start is None:
        torch.manual_seed(0)
        start = M.expmap0_spatial(0.3 * torch.randn(M.dim))
        target = M.expmap0_spatial(0.8 * torch.randn(M.dim))
    x = geoopt.ManifoldParameter(start.clone(), manifold=M)
    opt = (geoopt.optim.RiemannianAdam([x], lr=0.05) if optim == "adam"
           else geoopt.optim.RiemannianSGD([x], lr=0.1, momentum=0.5))
    for _ in range(400):
        opt.zero_grad()
        loss = M.dist(x, target) ** 2
        loss.backward()
        opt.step()
    assert float(M.dist(x.detach(), target)) < 1e-3, float(M.dist(x.detach(), target))
    assert bool(M.check_point_on_manifold(x.detach()))
