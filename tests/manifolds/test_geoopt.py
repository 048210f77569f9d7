"""Cross-check against geoopt near the origin (float64), and interoperability with geoopt's optimisers."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

KS = (0.25, 1.0, 4.0)
# near the origin (distance <= 3) geoopt is accurate in float64 to ~EPS·cosh²(3)·(a few) ≈ 1e-13
RTOL, ATOL = 1e-9, 1e-11


def _close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a.double(), b.double(), rtol=RTOL, atol=ATOL), float((a - b).abs().max())


@pytest.fixture
def sample(geo):
    """(k) -> float64 points x, y within distance 3·sqrt(k)·(≤1) of the origin and tangent vectors u, v at x."""

    def make(k: float, count: int = 64, n: int = 3):
        M, sk, gen = Lorentz(k), math.sqrt(k), torch.Generator().manual_seed(7)
        s = lambda: 3 * sk * torch.rand(count, generator=gen, dtype=torch.float64)  # noqa: E731
        x = geo.point(M, s(), geo.directions(gen, count, n))
        y = geo.point(M, s(), geo.directions(gen, count, n))
        u = geo.tangent(M, x, 1.5 * torch.rand(count, generator=gen, dtype=torch.float64) * sk,
                        geo.directions(gen, count, n))
        v = geo.tangent(M, x, torch.rand(count, generator=gen, dtype=torch.float64) * sk,
                        geo.directions(gen, count, n))
        u0 = torch.cat([torch.zeros(count, 1, dtype=torch.float64), torch.randn(count, n, generator=gen,
                                                                                 dtype=torch.float64)], -1)
        return M, geoopt.Lorentz(k=k), x, y, u, v, u0

    return make


@pytest.mark.parametrize("k", KS)
def test_agrees_with_geoopt_near_origin(sample, k):
    M, G, x, y, u, v, u0 = sample(k)
    assert bool((M.dist0(x) <= 3 * math.sqrt(k) + 1e-12).all()) and bool((M.dist0(y) <= 3 * math.sqrt(k) + 1e-12).all())
    _close(M.inner(x, u, v), G.inner(x, u, v))
    _close(M.inner(x, u, keepdim=True), G.inner(x, u, keepdim=True))
    _close(M.dist(x, y), G.dist(x, y))
    _close(M.dist0(x), G.dist0(x))
    _close(M.expmap(x, u), G.expmap(x, u))
    _close(M.logmap(x, y), G.logmap(x, y))
    _close(M.expmap0(u0), G.expmap0(u0))
    _close(M.logmap0(y), G.logmap0(y))
    _close(M.transp(x, y, v), G.transp(x, y, v))
    _close(M.transp0(y, u0), G.transp0(y, u0))
    _close(M.transp0back(x, u), G.transp0back(x, u))
    off = x + 0.1 * torch.randn_like(x)
    _close(M.projx(off), G.projx(off))
    w = torch.randn_like(x)
    _close(M.proju(x, w), G.proju(x, w))
    _close(M.egrad2rgrad(x, w), G.egrad2rgrad(x, w))
    _close(M.norm(u), G.norm(u))
    _close(M.origin(5, 4, dtype=torch.float64), G.origin(5, 4, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
# optimisation with geoopt
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifold", ["lorentz", "euclidean"])
def test_riemannian_adam_converges_and_stays_on_manifold(manifold):
    if manifold == "lorentz":
        M = Lorentz(k=2.0)
        start = M.expmap0(torch.tensor([[0.0, 1.5, -0.5, 0.3]]))
        target = M.expmap0(torch.tensor([[0.0, -1.0, 2.0, 0.5]]))
    else:
        M = Euclidean()
        start, target = torch.tensor([[1.5, -0.5, 0.3]]), torch.tensor([[-1.0, 2.0, 0.5]])
    p = geoopt.ManifoldParameter(start.clone(), manifold=M)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.05)
    d_start = float(M.dist(p.detach(), target))
    for _ in range(300):
        opt.zero_grad()
        loss = M.dist(p, target).pow(2).sum()
        loss.backward()
        opt.step()
        ok, reason = M.check_point_on_manifold(p.detach(), explain=True)
        assert ok, reason
    d_end = float(M.dist(p.detach(), target))
    assert d_end < 0.01 * d_start, (d_start, d_end)
    assert isinstance(p, geoopt.ManifoldParameter) and p.manifold is M


def test_learnable_curvature():
    M = Lorentz(k=2.0, learnable=True)
    assert float(M.k.detach()) == pytest.approx(2.0) and float(M.k.detach()) > 0
    assert M.k_raw.requires_grad and M.learnable and M.curvature_parameter is M.k_raw
    assert any(p is M.k_raw for p in M.parameters())
    v = torch.tensor([[0.3, -1.2], [2.0, 0.7]])
    x = M.expmap0_spatial(v)  # depends on k
    loss = M.dist(x[:1], x[1:]).sum() + M.logmap0(x).pow(2).sum()
    loss.backward()
    assert M.k_raw.grad is not None and bool(torch.isfinite(M.k_raw.grad)) and float(M.k_raw.grad) != 0.0
    # with geoopt's optimiser, which treats k_raw as a Euclidean parameter
    M.set_k(2.0)
    opt = geoopt.optim.RiemannianAdam([M.k_raw], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        M.dist0(M.expmap0_spatial(torch.tensor([1.0, 0.0]))).backward()
        opt.step()
        assert float(M.k.detach()) > 0


@pytest.mark.parametrize("step", [-1e4, -100.0, 100.0, 1e4, 1e30])
def test_learnable_curvature_stays_in_its_range(step):
    """Issue 13 row 4: however far an optimiser pushes it, ``k`` stays inside ``k_range`` (log k was seen at −84 and
    +91 unbounded, then every log_prob was NaN); geometry and log-densities stay finite at the bounds."""
    from manifolds import WrappedNormal
    from manifolds.constants import K_RANGE

    M = Lorentz(k=1.0, learnable=True)
    opt = torch.optim.SGD([M.k_raw], lr=1.0)
    M.k_raw.grad = torch.tensor(-step)
    opt.step()
    k = float(M.k.detach())
    assert K_RANGE[0] * (1 - 1e-6) <= k <= K_RANGE[1] * (1 + 1e-6) and math.isfinite(k)  # float32 rounding of exp
    x = M.expmap0_spatial(torch.tensor([[0.3, -0.2], [0.01, 0.02]]))
    lp = WrappedNormal(M.origin(2, 3), torch.full((2, 2), 0.5), M).log_prob(x)
    lp.sum().backward()
    assert bool(torch.isfinite(lp).all()) and bool(torch.isfinite(M.k_raw.grad))


def test_curvature_parametrisation_is_smooth_and_exact():
    """``k(θ)`` hits the requested ``k`` exactly (set_k, constructor) across the range, and near ``k = 1`` a unit step in
    ``θ`` is a unit step in ``log k`` (the former parametrisation's training speed)."""
    for k in (1.5e-3, 0.05, 1.0, 2.0, 121.0, 900.0):
        assert float(Lorentz(k=k).k) == pytest.approx(k, rel=1e-6)
        M = Lorentz(k=3.0).double()
        M.set_k(k)
        assert float(M.k) == pytest.approx(k, rel=1e-12)
    M = Lorentz(k=1.0, learnable=True).double()
    M.log_k.backward()
    assert float(M.k_raw.grad) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside its range"):
        Lorentz(k=5000.0)
    assert float(Lorentz(k=5000.0, k_range=(1.0, 1e4)).k) == pytest.approx(5000.0, rel=1e-5)
    with pytest.raises(ValueError, match="outside its range"):
        Lorentz(k=2.0).set_k(1e4)
    with pytest.raises(ValueError, match="k_range"):
        Lorentz(k=2.0, k_range=(3.0, 1.0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_loading_a_non_finite_curvature_is_an_error(bad):
    """Issue 13 row 4: a state_dict whose curvature is not finite (a diverged run) is refused with a clear error."""
    M = Lorentz(k=2.0, learnable=True)
    sd = M.state_dict()
    sd["k_raw"] = torch.tensor(bad)
    with pytest.raises(ValueError, match="non-finite Lorentz curvature"):
        M.load_state_dict(sd)
    assert float(M.k.detach()) == pytest.approx(2.0)


def test_loading_a_legacy_log_k_state_dict():
    """A checkpoint of the former parametrisation (``log_k`` = log k) loads to the same k; out of range or NaN: error."""
    M = Lorentz(k=1.0, learnable=True)
    M.load_state_dict({"log_k": torch.tensor(math.log(3.0))})
    assert float(M.k.detach()) == pytest.approx(3.0, rel=1e-6)
    for bad in (float("nan"), 90.8, -84.0):
        with pytest.raises(ValueError, match="outside its range"):
            M.load_state_dict({"log_k": torch.tensor(bad)})


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_curvature_raises(bad):
    with pytest.raises(ValueError, match="k"):
        Lorentz(k=bad)
    with pytest.raises(ValueError):
        Lorentz(k=1.0).set_k(bad)


def test_lorentz_math_is_geoopt_free_of_state():
    """The pure functions accept a batched k (one curvature per row) like the class does with a scalar."""
    k = torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    v = torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.5, 1.0]], dtype=torch.float64)
    x = lm.expmap0_spatial(v, k)
    for i, ki in enumerate(k.tolist()):
        _close(x[i], lm.expmap0_spatial(v[i], ki))
        _close(lm.dist0(x, k)[i], lm.dist0(x[i], ki))
    o = lm.origin(2, k)
    _close(lm.logmap(o, x, k), lm.logmap0(x, k))
    _close(lm.dist(o, x, k), lm.dist0(x, k))


# ---------------------------------------------------------------------------------------------------------------
# drop-in: every public method of geoopt.Lorentz exists here with the same meaning
# ---------------------------------------------------------------------------------------------------------------

def test_every_public_method_of_geoopt_lorentz_exists():
    theirs = {n for n in dir(geoopt.Lorentz) if not n.startswith("_")}
    missing = sorted(n for n in theirs if not hasattr(Lorentz, n))
    assert not missing, f"geoopt.Lorentz has {missing}, manifolds.Lorentz does not"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", KS)
def test_inner0_logmap0back_and_geodesic_unit_identities(k, dtype):
    """``inner0(v) = <o, v>_L``; ``log_x(o)`` has length ``d(x, o)`` and ``exp_x(log_x(o)) = o``; the unit-speed
    geodesic stays on the manifold, starts at ``x`` with velocity ``u``, is ``exp_x(t·u)`` and has ``d(x, γ(t)) =
    |t|``. Norms from 1e-3 to 10 in float64; in float32 to 5, where ambient coordinates at other base points still
    hold 1e-3 (the README's numerical envelope: ``ε·cosh²(s)``)."""
    M, sk = Lorentz(k), math.sqrt(k)
    gen = torch.Generator().manual_seed(3)
    top = 10.0 if dtype == torch.float64 else 5.0
    norms = torch.logspace(-3, math.log10(top), 12, dtype=torch.float64) * sk
    d = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    x = lm.expmap0_spatial(d / d.norm(dim=-1, keepdim=True) * norms[:, None], k).to(dtype)
    o = M.origin(12, 4, dtype=dtype)
    v = torch.randn(12, 4, generator=gen, dtype=torch.float64).to(dtype)
    torch.testing.assert_close(M.inner0(v), lm.inner(o, v))
    back = M.logmap0back(x)
    tol = 1e-7 if dtype == torch.float64 else 2e-3  # ambient coordinates at distance s hold ~ε·cosh²(s)
    torch.testing.assert_close(M.norm(back).double(), M.dist0(x).double(), rtol=tol, atol=tol)
    torch.testing.assert_close(M.logmap0(M.expmap(x, back)).double(), torch.zeros(12, 4, dtype=torch.float64),
                               atol=tol * (1 + float(norms.max())), rtol=0)
    w = M.proju(x, torch.randn(12, 4, generator=gen, dtype=torch.float64).to(dtype))
    u = w / M.norm(w, keepdim=True)  # unit speed
    for t in (0.0, 0.3 * sk, 1.7 * sk):
        y = M.geodesic_unit(torch.tensor(t), x, u)
        assert bool(M.check_point_on_manifold(y))
        torch.testing.assert_close(M.dist(x, y).double(), torch.full((12,), t, dtype=torch.float64),
                                   rtol=tol, atol=tol * sk)
        torch.testing.assert_close(M.logmap0(y).double(), M.logmap0(M.expmap(x, t * u)).double(),
                                   rtol=tol, atol=tol * (1 + float(norms.max())))


def test_drop_in_methods_equal_geoopt_near_the_origin(geo):
    """Where geoopt is accurate (k = 1, float64, distance <= 3) the three methods give geoopt's values."""
    M, G = Lorentz(1.0), geoopt.Lorentz(k=1.0)
    gen = torch.Generator().manual_seed(5)
    x = lm.expmap0_spatial(torch.randn(16, 3, generator=gen, dtype=torch.float64), 1.0)
    u = M.proju(x, torch.randn(16, 4, generator=gen, dtype=torch.float64))
    u = u / M.norm(u, keepdim=True)
    t = torch.rand(16, 1, generator=gen, dtype=torch.float64)
    _close(M.inner0(u), G.inner0(u))
    _close(M.logmap0back(x), G.logmap0back(x))
    _close(M.geodesic_unit(t, x, u), G.geodesic_unit(t, x, u))


def test_random_normal_takes_geoopts_keywords_and_means_them():
    torch.manual_seed(0)
    z = Lorentz(2.0).random_normal(20000, 3, mean=0.5, std=0.2)
    v = Lorentz(2.0).logmap0(z)[..., 1:]
    assert abs(float(v.mean()) - 0.5) < 0.01 and abs(float(v.std()) - 0.2) < 0.01


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("raw", [-1e30, -1e4, -50.0, 50.0, 1e4, 1e30])
def test_k_range_holds_strictly_in_every_dtype(dtype, raw):
    """Issue 25 item 7: however saturated ``θ`` is, ``k`` is strictly inside ``k_range`` in its own dtype (float32
    reached 1000.0001 and 0.00099999993)."""
    M = Lorentz(k=1.0, learnable=True).to(dtype)
    with torch.no_grad():
        M.k_raw.fill_(raw)
    k = float(M.k.detach())
    assert M.k.dtype == dtype and M.k_range[0] < k < M.k_range[1]


@pytest.mark.parametrize("value", [999.9999999999999, math.nextafter(1e3, 0.0), math.nextafter(1e-3, 1.0), 1.0000001e-3,
                                   0.5, 123.0])
def test_set_k_accepts_what_the_constructor_accepts(value):
    """Issue 25 item 7: ``set_k`` and the constructor accept the same values (``set_k(999.9999999999999)`` raised
    "math domain error"; ``Lorentz(k=1e-3)`` was accepted and ``set_k(1e-3)`` refused); the bounds themselves are
    refused by both, and ``k`` lands within float rounding of the value asked for."""
    M = Lorentz(k=value).double()
    M2 = Lorentz(k=2.0).double()
    M2.set_k(value)
    for m in (M2,):
        assert m.k_range[0] < float(m.k) < m.k_range[1]
        assert float(m.k) == pytest.approx(value, rel=1e-12)
    assert float(M.k) == pytest.approx(value, rel=1e-6)  # the constructor's parameter is in the default dtype
    for bound in (1e-3, 1e3):
        with pytest.raises(ValueError, match="outside its range"):
            Lorentz(k=bound)
        with pytest.raises(ValueError, match="outside its range"):
            M2.set_k(bound)
