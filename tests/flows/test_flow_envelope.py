"""float32 envelope of TC and WHC (issue 3): with conditioner outputs large enough that log-scales reach ±3 and
WHC's translation point reaches distance 5 from the origin, for tangent inputs up to ‖w‖ = 10,

* float32 round trips are within 1e-4 relative (in tangent coordinates, relative to max(1, ‖w‖));
* float32 log-dets are within 1e-3 (absolute) of the float64 value of the same flow on the same inputs;
* the float64 log-det still matches the autograd Jacobian (MATH.md §4);
* outputs beyond float32's range (distance ≈ 88·sqrt(k)) raise ValueError instead of returning NaN.

The envelope flow has 4 layers whose last conditioner layers are set (not clamped: log-scales pass through the
smooth bound 4·tanh(ŝ/4), so ŝ = 4·atanh(0.8) gives s ≈ 3.2) to the log-scale pattern (-3, +3, +3, -3) on
alternating halves: each coordinate is scaled once by e^{±3.2} ≈ 24.5 and later back (tangent norms reach
~250 inside the stack), so outputs stay inside float32's range while every layer works at its extreme. The
third layer translates by 5.05 (WHC: |t̂| = sqrt(k)·sinh(5.05/sqrt(k)); TC: a tangent translation of norm
5.05). The opposite pattern (+, -, -, +), with the translation after a scale-down, makes the map itself
ill-conditioned: rounding the float64 outputs to float32 and inverting exactly already loses up to 1e-3
(k = 0.5), so it would measure the test map, not the implementation.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import flows
from flows import bounded_log_scale
from manifolds import Lorentz
from manifolds.constants import COSH_LIMIT

F64, F32 = torch.float64, torch.float32

LOG_SCALE_SIGNS = (-1, +1, +1, -1)
RAW_LOG_SCALE = 4 * math.atanh(0.8)  # bounded to s = 3.2
TRANSLATE_LAYER = 2
TRANSLATE_DIST = 5.05
ROUNDTRIP_RTOL = 1e-4
LOGDET_ATOL = 1e-3


def _envelope_flow(fh, name: str, k: float, n: int, signs=LOG_SCALE_SIGNS, hidden: int = 32):
    M = Lorentz(k=torch.tensor(k, dtype=F64))
    f = flows.build(name, M, n, layers=len(signs), hidden=hidden).double()
    fh.randomize_(f, gain=1.0)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for i, (c, sign) in enumerate(zip(fh.couplings(f), signs)):
            last = c.net.net[-1]
            l = len(c.trans_idx)
            # inputs still matter (non-constant conditioner), but only a little at this scale
            last.weight.copy_(torch.randn(last.weight.shape, generator=g, dtype=F64) * 0.3 / math.sqrt(hidden))
            last.bias[:l] = sign * RAW_LOG_SCALE
            # translations: large in the layer after the scale-down, small elsewhere (a translation that is
            # later scaled up by e^3.2 would push outputs beyond float32's range)
            d = TRANSLATE_DIST if i == TRANSLATE_LAYER else 0.2
            u = torch.randn(l, generator=g, dtype=F64)
            u = u / u.norm()
            last.bias[l:] = u * (math.sqrt(k) * math.sinh(d / math.sqrt(k)) if name == "whc" else d)
    return M, f


def _record_params(f):
    """Forward hooks on the conditioners: the log-scales and (WHC) translation points each layer used."""
    seen = []

    def hook(module, args, out):
        raw, second = out.detach().chunk(2, dim=-1)
        seen.append((bounded_log_scale(raw), second))

    handles = [c.net.register_forward_hook(hook) for c in f.modules() if isinstance(c, flows.Coupling)]
    return seen, handles


def _inputs(n: int) -> torch.Tensor:
    """Tangent inputs with norms from 0.05 to 10 (half of them at exactly 10), random directions, and the
    coordinate axes at norm 10."""
    g = torch.Generator().manual_seed(5)
    norms = torch.cat([torch.linspace(0.05, 10.0, 32, dtype=F64), torch.full((32,), 10.0, dtype=F64)])
    d = torch.randn(norms.numel(), n, generator=g, dtype=F64)
    w = d / d.norm(dim=-1, keepdim=True) * norms[:, None]
    axes = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)]) * 10.0
    return torch.cat([w, axes])


def _rel(a, b):
    return torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1).clamp_min(1.0)


#: k = 1 (the issue's "distance 5") and k = 2. At k = 0.5 (distance 5 = 7.1 curvature radii) the float32
#: WHC log-det of one n = 5 input misses 1e-3 (measured 1.02e-3): the float32 conditioner's rounding of
#: t̂ (|t̂| ≈ 450) tilts the translation axis by ~ε, which moves far points by ~ε·sinh(d/sqrt(k))·‖v‖ —
#: a limit of the t̂ parameterisation, not of the arithmetic (rounding only the stored intermediates to
#: float32 in an otherwise float64 evaluation gives 4e-6).
ENVELOPE_KS = (1.0, 2.0)
CASES = [pytest.param(name, k, n, id=f"{name}-k{k}-n{n}") for name in ("tc", "whc") for k in ENVELOPE_KS
         for n in (2, 3, 5)]


@pytest.mark.parametrize("name,k,n", CASES)
@torch.no_grad()
def test_float32_envelope(fh, name, k, n):
    M64, f64 = _envelope_flow(fh, name, k, n)
    f32 = copy.deepcopy(f64).float()
    M32 = f32.manifold
    w64 = _inputs(n).float().double()  # the same inputs, exactly representable in both dtypes
    w32 = w64.float()

    seen, handles = _record_params(f64)
    y64, l64 = f64(M64.expmap0_spatial(w64))
    for h in handles:
        h.remove()
    # the envelope is actually reached: log-scales of both signs beyond 3, a translation at distance 5
    s_all = torch.cat([s.reshape(-1) for s, _ in seen])
    assert float(s_all.max()) >= 3.0 and float(s_all.min()) <= -3.0
    if name == "whc":
        t_dist = max(float((math.sqrt(k) * torch.asinh(t.norm(dim=-1) / math.sqrt(k))).max()) for _, t in seen)
        assert t_dist >= 5.0
    v64 = M64.logmap0_spatial(y64).detach()
    l64 = l64.detach()
    assert float(v64.norm(dim=-1).max()) < 0.8 * COSH_LIMIT[F32] * math.sqrt(k)  # inside float32's range

    # forward: float32 vs float64 on the same inputs, and the float32 round trip
    x32 = M32.expmap0_spatial(w32)
    y32, l32 = f32(x32)
    y32, l32 = y32.detach(), l32.detach()
    assert y32.dtype == F32 and torch.isfinite(y32).all() and torch.isfinite(l32).all()
    assert float((l32.double() - l64).abs().max()) < LOGDET_ATOL
    back32, lb32 = f32.inverse(y32)
    assert float(_rel(M32.logmap0_spatial(back32).double(), w64).max()) < ROUNDTRIP_RTOL
    # inverse (density direction) at the float64 outputs rounded to float32
    y_in = v64.float()
    x64_i, li64 = f64.inverse(M64.expmap0_spatial(y_in.double()))
    x32_i, li32 = f32.inverse(M32.expmap0_spatial(y_in))
    assert torch.isfinite(x32_i).all() and torch.isfinite(li32).all()
    assert float((li32.double() - li64).abs().max()) < LOGDET_ATOL
    fwd32, _ = f32(x32_i)
    assert float(_rel(M32.logmap0_spatial(fwd32).double(), y_in.double()).max()) < ROUNDTRIP_RTOL
    # and the float32 outputs themselves agree with float64 (looser: the forward map amplifies input rounding
    # by up to e^{3.2} per scaling layer; measured ≤ 3e-5)
    assert float(_rel(M32.logmap0_spatial(y32).double(), v64).max()) < 1e-3


@pytest.mark.parametrize("name,k,n", [c for c in CASES if c.values[2] != 5])
def test_float64_logdet_holds_in_the_envelope(fh, name, k, n):
    M, f = _envelope_flow(fh, name, k, n)
    w = _inputs(n)[::4]
    ladj = f(M.expmap0_spatial(w))[1]
    torch.testing.assert_close(ladj, fh.batched_riemannian_logdet(M, lambda x: f(x)[0], w), atol=1e-6, rtol=0)
    y = M.logmap0_spatial(f(M.expmap0_spatial(w))[0])
    ladj_inv = f.inverse(M.expmap0_spatial(y))[1]
    torch.testing.assert_close(ladj_inv, fh.batched_riemannian_logdet(M, lambda x: f.inverse(x)[0], y), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("k", [1.0, 0.5])
@pytest.mark.parametrize("name", ["tc", "whc"])
def test_float32_overflow_raises_value_error(fh, name, k, validating):
    """Outputs farther than ≈ 88·sqrt(k) from o cannot be represented in float32: with validation on
    (``manifolds.validation``), the flow must say so."""
    limit = COSH_LIMIT[F32] * math.sqrt(k)
    M32 = Lorentz(k=k)
    assert torch.isfinite(M32.expmap0_spatial(torch.tensor([0.95 * limit, 0.0]))).all()
    with pytest.raises(ValueError):
        M32.expmap0_spatial(torch.tensor([1.05 * limit, 0.0]))
    # a 2-layer flow that scales by e^{+3.2} in the sampling direction (and e^{-3.2} back)
    _, f64 = _envelope_flow(fh, name, k, 2, signs=(+1, +1))
    f32 = copy.deepcopy(f64).float()
    M = f32.manifold
    w = torch.tensor([[0.0, 10.0], [10.0, 0.0]])  # outputs ≈ 10·e^{3.2} ≈ 245 > limit
    with pytest.raises(ValueError):
        f32(M.expmap0_spatial(w))
    # density direction: a representable point whose pre-image lies beyond the limit
    _, g64 = _envelope_flow(fh, name, k, 2, signs=(-1, -1))
    g32 = copy.deepcopy(g64).float()
    y = g32.manifold.expmap0_spatial(torch.tensor([[0.0, 0.6 * limit], [0.6 * limit, 0.0]]))
    with pytest.raises(ValueError):
        g32.inverse(y)
    # … while the same maps are fine well inside the range
    out, ladj = f32(M.expmap0_spatial(w / 10))
    assert torch.isfinite(out).all() and torch.isfinite(ladj).all()
