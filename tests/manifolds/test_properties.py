"""One property suite over every manifold of the library (ℝⁿ and H^n_k, k ∈ {0.25, 1, 4}), float32 and float64.

Hypothesis draws the distance of the base points from the origin (uniform) and tangent norms log-uniformly from
1e-6 to the edge of the numerical envelope; each example checks a batch of random directions at once.

Envelope edges (distances in units of ``sqrt(k)``; see ``conftest.py`` for the error model):
* base points: float32 up to 5 (``EPS·cosh²(5) ≈ 3e-4``, MATH.md §7), float64 up to 10 (``≈ 1.4e-8``);
* tangent norms at arbitrary base points: the same 5 / 10;
* tangent vectors at the origin (``expmap0``/``logmap0``/``dist0``): up to 85 in float32 (``cosh`` overflows at
  ≈ 88.7), 700 in float64 (overflow at ≈ 710).

Tolerances: ``C·(EPS·cosh²(s_max) + EPS·||ŷ||/||u||)`` for tangent vectors (the second term is the absolute
floor ``EPS·||ŷ||`` of a rounded endpoint, relative to the step length) with ``C = 32``: the ambient coordinates of
a unit tangent vector are up to ``e^s ≈ 2 cosh s``, so rounding plus re-projection costs ``4·EPS·cosh²`` per
rounding, and a round trip rounds twice in ``n + 1 <= 6`` coordinates (``4·2·sqrt(6) ≈ 20``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifolds import lorentz_math as lm

MANIFOLDS = ["euclidean", "lorentz-0.25", "lorentz-1.0", "lorentz-4.0"]
DTYPES = [torch.float32, torch.float64]
BASE_EDGE = {torch.float32: 5.0, torch.float64: 10.0}
ORIGIN_EDGE = {torch.float32: 85.0, torch.float64: 700.0}
C = 32.0
BATCH = 8

hyp = settings(max_examples=50, deadline=None)
seeds = st.integers(0, 2**31 - 1)
dims = st.sampled_from([1, 2, 5])
unit = st.floats(0.0, 1.0, allow_subnormal=False)


def _setup(geo, name, dtype, seed, n):
    M = geo.make_manifold(name)
    gen = torch.Generator().manual_seed(seed)
    return M, gen, math.sqrt(geo.kval(M))


def _log_uniform(lo: float, hi: float, t: float) -> float:
    return math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))


def _base(geo, M, gen, n, sk, dtype, frac):
    """A batch of BATCH points at distance frac·edge·sqrt(k) (float64 and rounded to dtype)."""
    s = torch.full((BATCH,), frac * BASE_EDGE[dtype] * sk, dtype=torch.float64)
    x = geo.point(M, s, geo.directions(gen, BATCH, n)).to(dtype)
    return x, geo.dist0(M, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, frac=unit, scale=st.floats(1e-3, 10.0))
def test_projx_idempotent(geo, name, dtype, seed, n, frac, scale):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    x, _ = _base(geo, M, gen, n, sk, dtype, frac)
    off = x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)  # off the manifold
    p = M.projx(off)
    assert geo.point_error(M.projx(p), p) <= 4 * geo.EPS[dtype]
    assert M.check_point_on_manifold(p)
    if geo.is_lorentz(M):  # the projection keeps the spatial part and fixes x_0 > 0
        assert torch.equal(p[..., 1:], off[..., 1:]) and bool((p[..., 0] > 0).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, frac=unit, t=unit)
def test_logmap_inverts_expmap(geo, name, dtype, seed, n, frac, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    x, s_x = _base(geo, M, gen, n, sk, dtype, frac)
    r = torch.full((BATCH,), _log_uniform(1e-6, BASE_EDGE[dtype], t) * sk, dtype=torch.float64)
    u = geo.tangent(M, x.double(), r, geo.directions(gen, BATCH, n)).to(dtype)
    y = M.expmap(x, u)
    u_back = M.logmap(x, y)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(u_back).all())
    err = geo.tangent_error(M, x, u_back, u)
    r_eff = geo.riem_norm(M, x, geo.eff_tangent(M, x, u))
    tol = C * (geo.cond(M, s_x, dtype) + geo.EPS[dtype] * geo.spatial_size(M, y) / r_eff)
    assert bool((err <= tol).all()), f"max err/tol {float((err / tol).max()):.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, frac=unit, t=unit)
def test_expmap_inverts_logmap(geo, name, dtype, seed, n, frac, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    x, s_x = _base(geo, M, gen, n, sk, dtype, frac)
    r = torch.full((BATCH,), _log_uniform(1e-6, BASE_EDGE[dtype], t) * sk, dtype=torch.float64)
    y = M.expmap(x, geo.tangent(M, x.double(), r, geo.directions(gen, BATCH, n)).to(dtype))
    y_back = M.expmap(x, M.logmap(x, y))
    # the log map's relative error cond(s_x) (a tangent vector at x) is carried by exp_x to a displacement of
    # the endpoint of up to cond·sqrt(k)·sinh(d/sqrt(k)) (growth of a Jacobi field; cond·d on ℝⁿ);
    # rounding y itself costs EPS·||ŷ||.
    d_xy = M.dist(x.double(), y.double())
    jacobi = sk * torch.sinh(d_xy / sk) if geo.is_lorentz(M) else d_xy
    err = M.dist(y_back.double(), y.double())
    tol = C * (geo.cond(M, s_x, dtype) * jacobi + geo.EPS[dtype] * geo.spatial_size(M, y))
    assert bool((err <= tol).all()), f"max err/tol {float((err / tol).max()):.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, frac_x=unit, frac_y=unit, t=unit)
def test_transp_inverse_and_isometry(geo, name, dtype, seed, n, frac_x, frac_y, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    x, s_x = _base(geo, M, gen, n, sk, dtype, frac_x)
    y, s_y = _base(geo, M, gen, n, sk, dtype, frac_y)
    r = torch.full((BATCH,), _log_uniform(1e-6, BASE_EDGE[dtype], t) * sk, dtype=torch.float64)
    v = geo.tangent(M, x.double(), r, geo.directions(gen, BATCH, n)).to(dtype)
    w = M.transp(x, y, v)
    v_back = M.transp(y, x, w)
    # the transported vector is rounded at y: the conditioning is that of the farther of the two base points
    tol = C * geo.cond(M, torch.maximum(s_x, s_y), dtype)
    err = geo.tangent_error(M, x, v_back, v)
    assert bool((err <= tol).all()), f"inverse: max err/tol {float((err / tol).max()):.3g}"
    n_v = geo.riem_norm(M, x, geo.eff_tangent(M, x, v))
    iso = (geo.riem_norm(M, y, w) / n_v - 1).abs()
    assert bool((iso <= tol).all()), f"isometry: max err/tol {float((iso / tol).max()):.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, fracs=st.tuples(unit, unit, unit))
def test_dist_symmetric_and_triangle(geo, name, dtype, seed, n, fracs):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    x, y, z = (_base(geo, M, gen, n, sk, dtype, f)[0] for f in fracs)
    dxy, dyx, dyz, dxz = M.dist(x, y), M.dist(y, x), M.dist(y, z), M.dist(x, z)
    assert dxy.dtype == dtype
    # distances are computed in float64 from the (projected) rounded points, then rounded once to dtype
    assert torch.allclose(dxy, dyx, rtol=4 * geo.EPS[dtype], atol=1e-300)
    slack = 8 * geo.EPS[dtype] * (dxy + dyz).double() + 1e-300
    assert bool((dxz.double() <= dxy.double() + dyz.double() + slack).all())
    assert bool((dxy >= 0).all()) and bool((M.dist(x, x) <= 1e-6 * sk).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, t=unit)
def test_expmap0_is_expmap_at_origin(geo, name, dtype, seed, n, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    r = torch.full((BATCH,), _log_uniform(1e-6, ORIGIN_EDGE[dtype], t) * sk, dtype=torch.float64)
    o = M.origin(BATCH, geo.point(M, torch.zeros(1), torch.zeros(1, n)).shape[-1], dtype=dtype)
    u = geo.tangent(M, o.double(), r, geo.directions(gen, BATCH, n)).to(dtype)
    # both are exact to a few roundings of the coordinates (relative to the point's size), plus the condition
    # number r/sqrt(k) of cosh and sinh at the rounded argument r/sqrt(k)
    tol = (16 + 2 * float(r[0]) / sk) * geo.EPS[dtype]
    assert geo.point_error(M.expmap0(u), M.expmap(o, u)) <= tol


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, t=unit)
def test_logmap0_is_logmap_at_origin(geo, name, dtype, seed, n, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    r = torch.full((BATCH,), _log_uniform(1e-6, ORIGIN_EDGE[dtype], t) * sk, dtype=torch.float64)
    y = geo.point(M, r, geo.directions(gen, BATCH, n)).to(dtype)
    o = M.origin(*y.shape, dtype=dtype)
    a, b = M.logmap0(y), M.logmap(o, y)
    # at the origin the Riemannian norm is the Euclidean norm of the spatial part; both maps see the same y.
    # logmap divides by sinhc(d/sqrt(k)), whose relative condition number is ≈ d/sqrt(k)
    err = torch.linalg.vector_norm((a - b).double(), dim=-1) / torch.linalg.vector_norm(b.double(), dim=-1)
    tol = (16 + 2 * float(r[0]) / sk) * geo.EPS[dtype]
    assert bool((err <= tol).all()), float(err.max())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MANIFOLDS)
@hyp
@given(seed=seeds, n=dims, t=unit)
def test_dist0_is_dist_from_origin(geo, name, dtype, seed, n, t):
    M, gen, sk = _setup(geo, name, dtype, seed, n)
    r = torch.full((BATCH,), _log_uniform(1e-6, ORIGIN_EDGE[dtype], t) * sk, dtype=torch.float64)
    x = geo.point(M, r, geo.directions(gen, BATCH, n)).to(dtype)
    o = M.origin(*x.shape, dtype=dtype)
    d0, d = M.dist0(x), M.dist(o, x)
    assert d0.dtype == dtype
    assert torch.allclose(d0, d, rtol=8 * geo.EPS[dtype], atol=0), float(((d0 - d) / d).abs().max())
    assert torch.allclose(d0.double(), r, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
