"""The optimiser of the training runs: Adam, or Adam with decoupled weight decay (``--weight-decay``)."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.run.steps import adam


@pytest.mark.parametrize("weight_decay", [0.0, 0.1, 3.0])
def test_weight_decay_is_decoupled_from_the_adam_update(weight_decay: float) -> None:
    """With a zero gradient Adam's update is zero, so one step only shrinks every parameter by (1 - lr·λ) (and
    leaves it unchanged at λ = 0); with a gradient the step is the plain Adam step on top of that shrink."""
    lin = torch.nn.Linear(3, 2, dtype=torch.float64)
    w0 = lin.weight.detach().clone()
    opt = adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    assert type(opt).__name__ == ("AdamW" if weight_decay else "Adam")
    for p in lin.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(lin.weight.detach(), w0 * (1 - 1e-2 * weight_decay), rtol=1e-12, atol=1e-15)
    # a gradient: the first Adam step moves each entry by lr·sign(g) (m̂/√v̂ = g/|g|), after the shrink
    w1 = lin.weight.detach().clone()
    g = torch.randn_like(w1)
    opt = adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    lin.weight.grad = g
    lin.bias.grad = torch.zeros_like(lin.bias)
    opt.step()
    expected = w1 * (1 - 1e-2 * weight_decay) - 1e-2 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(lin.weight.detach(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_a_bad_weight_decay_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3, weight_decay=bad)


def test_graph_recon_trains_with_the_configured_weight_decay() -> None:
    """``--weight-decay`` reaches the run's optimiser."""
    from experiments import datasets as ds
    from experiments.run.config import RunConfig
    from experiments.tasks.graph_recon import GraphReconJob

    data = ds.load_graph("tree")
    for wd in (0.0, 0.5):
        cfg = RunConfig.for_command("graph-recon", dataset="tree", epochs=2, latent_dim=2, weight_decay=wd)
        job = GraphReconJob(cfg, data, seed=0)
        assert job.opt.defaults["weight_decay"] == wd and type(job.opt).__name__ == ("AdamW" if wd else "Adam")
