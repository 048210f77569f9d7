"""Issue 13 row 7: who owns a manifold. ``flows.build`` gives a flow its own copy of a fixed-curvature manifold
(``share_manifold=False``), shares it only when asked (``share_manifold=True``, what the VAEs do), and refuses to
guess for a learnable one. These tests show the behaviour ``flows.build``'s docstring promises."""

from __future__ import annotations

import pytest
import torch

import flows
from manifolds import Lorentz
from vae import VAE
from vae.graph import GraphVAE


def _x(M: Lorentz, dtype=torch.float32) -> torch.Tensor:
    return M.expmap0_spatial(torch.tensor([[0.3, -0.5], [1.0, 2.0]], dtype=dtype))


def test_flows_built_on_one_manifold_are_independent():
    M = Lorentz(k=2.0)
    f1, f2 = flows.build("whc", M, 2), flows.build("whc", M, 2)
    y2, _ = f2(_x(M))
    # moving one flow to the meta device breaks neither M nor the other flow
    f1.to("meta")
    assert M.k.device.type == "cpu" and f2.manifold.k.device.type == "cpu"
    torch.testing.assert_close(f2(_x(M))[0], y2)
    # casting one flow leaves M's dtype alone
    f3 = flows.build("tc", M, 2).double()
    assert M.origin(3).dtype == torch.float32 and f3.manifold.origin(3).dtype == torch.float64
    # loading another curvature into one flow changes that flow only
    sd = flows.build("whc", Lorentz(k=3.0), 2).state_dict()
    f2.load_state_dict(sd)
    assert float(f2.manifold.k) == pytest.approx(3.0)
    assert float(M.k) == pytest.approx(2.0) and float(f3.manifold.k) == pytest.approx(2.0)


def test_shared_manifold_is_one_curvature_for_every_holder():
    M = Lorentz(k=2.0, learnable=True)
    f1 = flows.build("whc", M, 2, share_manifold=True)
    f2 = flows.build("tc", M, 2, share_manifold=True)
    assert f1.manifold is M and f2.manifold is M
    (f1(_x(M))[1].sum() + f2(_x(M))[1].sum()).backward()
    assert M.k_raw.grad is not None  # both flows train the one k
    f1.load_state_dict(flows.build("whc", Lorentz(k=3.0, learnable=True), 2, share_manifold=True).state_dict())
    assert float(f2.manifold.k.detach()) == pytest.approx(3.0)  # tied: loading one holder changes it for all (documented)


def test_a_learnable_manifold_needs_an_explicit_choice():
    M = Lorentz(k=2.0, learnable=True)
    with pytest.raises(ValueError, match="share_manifold=True"):
        flows.build("whc", M, 2)
    f = flows.build("whc", M, 2, share_manifold=False)
    assert f.manifold is not M and f.manifold.learnable and float(f.manifold.k.detach()) == pytest.approx(2.0)


def test_models_share_their_manifold_with_their_flows_and_refuse_a_copy():
    M = Lorentz(k=2.0)
    model = VAE(M, 6, 2, flow="whc")
    assert model.flow.manifold is M
    gmodel = GraphVAE(M, 5, 2, flow="whc")
    assert gmodel.flow.manifold is M
    with pytest.raises(ValueError, match="share_manifold=True"):
        VAE(M, 6, 2, flow=flows.build("whc", M, 2))  # a copy: a curvature schedule would not reach it
    VAE(M, 6, 2, flow=flows.build("whc", M, 2, share_manifold=True))


def test_compose_accepts_copies_of_one_fixed_manifold():
    M = Lorentz(k=2.0)
    f = flows.Compose([flows.build("whc", M, 2), flows.build("tc", M, 2)])
    y, ladj = f(_x(M))
    assert y.shape == (2, 3) and bool(torch.isfinite(ladj).all())
    with pytest.raises(ValueError, match="same manifold"):
        flows.Compose([flows.build("whc", M, 2), flows.build("tc", Lorentz(k=3.0), 2)])
