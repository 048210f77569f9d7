"""The flat torus Tⁿ in angle coordinates: the chart [-π, π), its edges, and the identities (float32 and float64)."""

from __future__ import annotations

import math

import pytest
import torch

from manifolds import Torus
from manifolds.torus import wrap

EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wrap_lands_in_the_half_open_chart(dtype):
    below_pi = torch.nextafter(torch.tensor(math.pi, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    a = torch.cat([torch.tensor([math.pi, -math.pi, 3 * math.pi, -3 * math.pi, 0.0, 1e6, -1e6, 1e-30], dtype=dtype),
                   below_pi.reshape(1), -below_pi.reshape(1), torch.linspace(-50, 50, 10001, dtype=dtype)])
    w = wrap(a)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    assert float(w[0]) == float(torch.tensor(-math.pi, dtype=dtype))  # π is the chart's -π
    assert float(w[1]) == float(torch.tensor(-math.pi, dtype=dtype))
    # the same angle: cos and sin unchanged (to the rounding of a + π)
    assert torch.allclose(torch.cos(w), torch.cos(a), atol=8 * EPS[dtype] * (1 + a.abs().max()))
    assert torch.equal(wrap(w), w)  # idempotent


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 3])
def test_identities(n, dtype):
    T = Torus(n)
    gen = torch.Generator().manual_seed(0)
    x = T.random_uniform(256, n, dtype=dtype)
    v = ((torch.rand(256, n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi * (1 - 1e-3)).to(dtype)
    v = v * torch.logspace(-7, 0, 256, dtype=dtype).unsqueeze(-1)
    y = T.expmap(x, v)
    assert bool(T.check_point_on_manifold(y))
    tol = 8 * EPS[dtype] * math.pi
    assert float((T.logmap(x, y) - v).abs().max()) <= tol  # below the injectivity radius π
    assert torch.allclose(T.dist(x, y), v.norm(dim=-1), atol=tol * math.sqrt(n))
    assert torch.equal(T.dist(x, y), T.dist(y, x))
    assert float((T.expmap(x, T.logmap(x, y)) - y).abs().max()) <= tol
    assert torch.equal(T.transp(x, y, v), v) and torch.equal(T.projx(y), y)
    assert torch.equal(T.translate(x, T.translate(x, y), inverse=True), wrap(y)) or float(
        (T.translate(x, T.translate(x, y), inverse=True) - y).abs().max()) <= tol
    assert torch.equal(T.logmap0_spatial(y), y) and torch.allclose(T.expmap0_spatial(v), wrap(v))
    assert torch.equal(T.expmap_logdet(v.norm(dim=-1), n), torch.zeros(256, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_chart_edges(dtype):
    T = Torus(1)
    e = 1e-3
    a, b = torch.tensor([math.pi - e], dtype=dtype), torch.tensor([-math.pi + e], dtype=dtype)
    assert torch.allclose(T.logmap(a, b), torch.tensor([2 * e], dtype=dtype), atol=16 * EPS[dtype] * math.pi)
    assert torch.allclose(T.dist(a, b), torch.tensor(2 * e, dtype=dtype), atol=16 * EPS[dtype] * math.pi)
    step = T.expmap(a, torch.tensor([2 * e], dtype=dtype))
    assert -math.pi <= float(step) < math.pi and abs(float(step) - float(b)) <= 16 * EPS[dtype] * math.pi
    # exactly opposite angles: log is -π (the chart's end), distance π
    assert float(T.logmap(torch.tensor([0.0], dtype=dtype), torch.tensor([-math.pi], dtype=dtype))) == float(
        torch.tensor(-math.pi, dtype=dtype))


def test_uniform():
    T = Torus(2)
    u = T.uniform(dtype=torch.float64)
    x = u.sample((10000,))
    assert bool(((x >= -math.pi) & (x < math.pi)).all())
    assert torch.allclose(u.log_prob(x), torch.full((10000,), -2 * math.log(2 * math.pi), dtype=torch.float64))
    assert float(x.mean(0).abs().max()) < 5 * math.pi / math.sqrt(3 * 10000)


def test_validation_names_the_angle_and_the_fix():
    T = Torus(2, validate=True)
    with pytest.raises(ValueError, match=r"angle 3\.5 at index \(0, 1\) is outside the chart \[-π, π\).*Torus\.projx") as e:
        T.logmap0_spatial(torch.tensor([[0.0, 3.5]]))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="dimension 2"):
        T.dist(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="positive integer"):
        Torus(0)
    T.logmap0_spatial(T.projx(torch.tensor([[0.0, 3.5]])))  # the fix works


def test_features_are_continuous_across_the_chart_edge():
    """The neural fields' input ``(cos θ, sin θ)`` (``2n`` numbers) takes the same value at ``-π`` and just below
    ``π`` (the same point), while the raw angles jump by ``2π``; and it tells points apart."""
    T = Torus(2)
    eps = 1e-9
    a = torch.tensor([[math.pi - eps, 0.3]], dtype=torch.float64)
    b = torch.tensor([[-math.pi, 0.3]], dtype=torch.float64)
    assert T.feature_dim(2) == 4 and T.features(a).shape == (1, 4)
    assert float((T.features(a) - T.features(b)).abs().max()) < 2 * eps
    assert float((T.features(a) - T.features(torch.tensor([[0.0, 0.3]], dtype=torch.float64))).abs().max()) > 1
