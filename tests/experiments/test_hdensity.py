"""``hdensity`` (issue 15): every target samples what its log-density says and is normalised, and the benchmark
runs end to end and writes its table and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.tasks import hdensity as hd
from manifolds import Lorentz

M = Lorentz(k=1.0)


@pytest.mark.parametrize("name, half_width, m, tol", [("wn-mixture", 6.0, 401, 1e-4), ("far-wn", 8.0, 401, 1e-4),
                                                      ("checkerboard", 3.0, 801, 3e-3), ("band", 3.0, 801, 3e-3)])
def test_h2_targets_are_normalised(name, half_width, m, tol):
    """``∫ p dvol = ∫ p(exp_o u)·ρ(u) du = 1`` by a midpoint rule in the chart ``log_o`` (the disk targets have
    jumps at the edges of their support, hence the looser tolerance)."""
    target = hd.make_target(name, M)
    h = 2 * half_width / m
    g = -half_width + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    u = torch.cartesian_prod(g, g)
    x = M.expmap0_spatial(u.float())
    with torch.no_grad():
        p = torch.exp(target.log_prob(x).double() + M.expmap_logdet(u.norm(dim=-1), 2))
    total = float(p.sum() * h * h)
    assert abs(total - 1) < tol, total


@pytest.mark.parametrize("name", hd.TARGETS)
def test_targets_sample_where_their_density_lives(name):
    """Samples are on the manifold with finite log-density, and the sample mean of ``-log p`` (the entropy estimate)
    agrees between two independent draws."""
    target = hd.make_target(name, M)
    x = target.sample(5000, torch.Generator().manual_seed(0))
    assert x.shape == (5000, target.dim + 1) and bool(M.check_point_on_manifold(x))
    lp = target.log_prob(x)
    assert bool(torch.isfinite(lp).all())
    h1, se1 = hd.entropy(target, torch.Generator().manual_seed(1), num=40_000)
    h2, se2 = hd.entropy(target, torch.Generator().manual_seed(2), num=40_000)
    assert abs(h1 - h2) < 5 * math.hypot(se1, se2)


def test_hdensity_runs_and_writes_its_report(tmp_path: Path, monkeypatch):
    from experiments.cli import main

    monkeypatch.setattr(hd, "SCHEDULE", {m: (12, 64, 1e-3) for m in hd.MODELS})
    monkeypatch.setattr(hd, "TEST_POINTS", 200)
    monkeypatch.setattr(hd, "ENTROPY_SAMPLES", 20_000)
    out = tmp_path / "hd"
    assert main(["hdensity", "--targets", "wn-mixture", "--models", "rfm,cnf,whc", "--out", str(out),
                 "--no-progress", "--threads", "1"]) == 0
    res = json.loads((out / "hdensity.json").read_text())
    rows = res["targets"][0]["models"]
    assert [r["model"] for r in rows] == ["rfm", "cnf", "whc"] and all(math.isfinite(r["nll"]) for r in rows)
    assert rows[0]["train_evaluations"] == 0 and rows[1]["train_evaluations"] > 0  # flow matching solves no ODE
    # the report states each model's size: RFM's field is as large as the coupling flow (see RFM_HIDDEN)
    assert 0.8 < rows[0]["params"] / rows[2]["params"] < 1.2 and rows[1]["params"] < rows[0]["params"]
    assert "rfm vs cnf" in (out / "hdensity.md").read_text() and (out / "densities_h2.png").stat().st_size > 0
    # shorter schedules ran for the time to reach (rfm, cnf), each cheaper than the full run
    for r in rows[:2]:
        assert [s["steps"] for s in r["speed_runs"]] == [max(2, int(12 * f)) for f in hd.SPEED_FRACTIONS]
        assert all(s["train_s"] < r["train_s"] and math.isfinite(s["nll_500"]) for s in r["speed_runs"])
    assert res["coupling"] == "ot" and "speed_runs" not in rows[2]
    assert main(["hdensity", "--targets", "nowhere", "--out", str(out)]) == 2


def test_time_to_reach_is_the_least_time_over_all_runs():
    full = [{"train_s": 10.0, "nll_500": 3.0}, {"train_s": 20.0, "nll_500": 2.0}, {"train_s": 40.0, "nll_500": 1.5}]
    short = [{"train_s": 4.0, "nll_500": 2.5}]
    shorter = [{"train_s": 8.0, "nll_500": 1.9}]
    assert hd.time_to_reach([full, short, shorter], 2.0) == 8.0
    assert hd.time_to_reach([full, short], 2.0) == 20.0
    assert hd.time_to_reach([full], 1.0) is None
