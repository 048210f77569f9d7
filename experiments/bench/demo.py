"""``make demo``: a short tour of the geometry and the flows, with a picture.

1. The float32 numerical envelope of our Lorentz manifold next to geoopt's, measured live.
2. A wrapped hyperboloid coupling (WHC) flow fitted by maximum likelihood to a mixture of wrapped normals on
   H², with its learned density drawn in the Poincaré disk (``<out>/whc_density.png``) and the numbers written
   to ``<out>/demo.json``.

Run ``python -m experiments.bench.demo --help`` for options.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import geoopt
import torch
from tqdm import trange

from experiments.plots import pyplot, save_figure
from experiments.run.options import add_config_arguments, common, config_from_args, option, positive
from flows import Flow, build
from manifolds import Lorentz, WrappedNormal
from manifolds import lorentz_math as lm


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    err = (a.double() - b.double()).norm(dim=-1) / b.double().norm(dim=-1)
    return float(err.nan_to_num(float("inf")).max())


def envelope_table() -> list[dict]:
    """Round-trip errors of ``log_o(exp_o(u))`` in float32, ours vs geoopt, for growing ``||u||``."""

    ours, theirs = Lorentz(1.0), geoopt.Lorentz(1.0)
    g = torch.Generator().manual_seed(0)
    rows = []
    for r in (1e-4, 1.0, 10.0, 30.0, 45.0, 60.0, 85.0):
        d = torch.randn(256, 3, generator=g)
        u = torch.cat([torch.zeros(256, 1), d / d.norm(dim=-1, keepdim=True) * r], dim=-1)
        with torch.no_grad():
            e_ours = _rel(ours.logmap0(ours.expmap0(u)), u)
            e_geo = _rel(theirs.logmap0(theirs.expmap0(u)), u)
        rows.append({"norm": r, "ours": e_ours, "geoopt": e_geo})
    return rows


def far_transport_table() -> list[dict]:
    """Norm change of a short parallel transport at distance ``s`` from the origin, float32."""

    theirs = geoopt.Lorentz(1.0)
    g = torch.Generator().manual_seed(1)
    rows = []
    for s in (1.0, 2.0, 3.0, 4.0):
        a = torch.randn(256, 2, generator=g, dtype=torch.float64)
        x = lm.expmap0_spatial(a / a.norm(dim=-1, keepdim=True) * s, 1.0)
        step = lm.transp0(x, torch.cat([torch.zeros(256, 1, dtype=torch.float64),
                                        1e-2 * torch.randn(256, 2, generator=g, dtype=torch.float64)], -1), 1.0)
        y = lm.expmap(x, step, 1.0)
        v = lm.transp0(x, torch.cat([torch.zeros(256, 1, dtype=torch.float64),
                                     torch.randn(256, 2, generator=g, dtype=torch.float64)], -1), 1.0)
        x32, y32, v32 = x.float(), y.float(), v.float()
        ref = lm.norm(v)

        def change(t: torch.Tensor) -> float:
            return float(((lm.norm(t.double()) - ref).abs() / ref).nan_to_num(float("inf")).max())

        rows.append({"distance": s, "ours": change(lm.transp(x32, y32, v32, 1.0)),
                     "geoopt": change(theirs.transp(x32, y32, v32))})
    return rows


def mixture(M: Lorentz, n_per: int, generator: torch.Generator) -> torch.Tensor:
    """Samples of an equal mixture of four wrapped normals at distance 1.5 around the origin."""
    pts = []
    for i in range(4):
        ang = i * math.pi / 2
        loc = M.expmap0_spatial(torch.tensor([1.5 * math.cos(ang), 1.5 * math.sin(ang)]))
        v = torch.randn(n_per, 2, generator=generator) * 0.3
        pts.append(M.translate(loc, M.expmap0_spatial(v)))
    return torch.cat(pts)


def fit_whc(steps: int, layers: int, seed: int) -> tuple[Flow, list[float], torch.Tensor, float]:

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    M = Lorentz(1.0)
    data, test = mixture(M, 1000, g), mixture(M, 500, g)
    flow = build("whc", M, dim=2, layers=layers, hidden=64)
    base = WrappedNormal.at_origin(torch.ones(2), M)
    q = Flow(base, flow)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    bar = trange(steps, desc="fitting WHC", leave=False)
    for _ in bar:
        batch = data[torch.randint(len(data), (256,), generator=g)]
        loss = -q.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(nll=f"{losses[-1]:.3f}")
    with torch.no_grad():
        test_ll = float(q.log_prob(test).mean())
    return q, losses, test, test_ll


def plot_density(q: Flow, test: torch.Tensor, path: Path) -> None:
    plt = pyplot()

    M = q.transform.manifold
    grid = torch.linspace(-0.97, 0.97, 200)
    px, py = torch.meshgrid(grid, grid, indexing="xy")
    p = torch.stack([px, py], -1)
    inside = p.norm(dim=-1) < 0.97
    with torch.no_grad():
        z = M.from_poincare(p[inside])
        dens = torch.full(px.shape, float("nan"))
        dens[inside] = q.log_prob(z).exp()
        disk = M.to_poincare(test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:400]])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(dens.numpy(), extent=(-0.97, 0.97, -0.97, 0.97), origin="lower", cmap="magma")
    ax.scatter(disk[:, 0], disk[:, 1], s=2, c="cyan", alpha=0.5, label="held-out samples")
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="black"))
    ax.set_xlim(-1.02, 1.02)
    ax.set_ylim(-1.02, 1.02)
    ax.set_aspect("equal")
    ax.set_title("WHC density on H² (Poincaré disk)")
    ax.legend(loc="lower right", fontsize=7)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


@dataclass(frozen=True)
class DemoConfig:
    """The settings of ``python -m experiments.bench.demo`` (its flags)."""

    out: Path = common("out", Path("runs/demo"))
    steps: int = option(600, "training steps of the WHC flow", type=positive())
    layers: int = option(8, "WHC coupling layers", type=positive())
    seed: int = common("seed", 0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap, DemoConfig)
    args = config_from_args(DemoConfig, ap.parse_args(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    print("1. log_o(exp_o(u)) round trip in float32, max relative error (geoopt 0.5.1 for comparison)")
    env = envelope_table()
    print(f"   {'||u||':>8} {'ours':>10} {'geoopt':>10}")
    for r in env:
        print(f"   {r['norm']:>8g} {r['ours']:>10.2e} {r['geoopt']:>10.2e}")
    print("\n2. short parallel transport (step 1e-2) at distance s, float32: max relative change of the norm")
    tr = far_transport_table()
    print(f"   {'s':>8} {'ours':>10} {'geoopt':>10}")
    for r in tr:
        print(f"   {r['distance']:>8g} {r['ours']:>10.2e} {r['geoopt']:>10.2e}")

    print(f"\n3. fitting a {args.layers}-layer WHC flow to a 4-component wrapped-normal mixture on H² "
          f"({args.steps} steps)")
    q, losses, test, test_ll = fit_whc(args.steps, args.layers, args.seed)
    print(f"   train NLL: first {losses[0]:.3f} -> last {losses[-1]:.3f}; held-out log-likelihood {test_ll:.3f} nats")
    plot_path = args.out / "whc_density.png"
    plot_density(q, test, plot_path)
    result = {"envelope_logmap0_expmap0": env, "short_transport": tr, "whc": {
        "layers": args.layers, "steps": args.steps, "train_nll_first": losses[0], "train_nll_last": losses[-1],
        "test_log_likelihood": test_ll}, "wall_s": time.time() - t0, "torch": torch.__version__}
    tmp = args.out / "demo.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out / "demo.json")
    print(f"\nwrote {plot_path} and {args.out / 'demo.json'} in {result['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
