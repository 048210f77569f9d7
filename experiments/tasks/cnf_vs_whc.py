"""A continuous flow and a wrapped hyperboloid coupling flow fitted to the same density on H² (issue 7).

``python -m experiments.tasks.cnf_vs_whc --out DIR --steps N`` fits, by maximum likelihood on the same samples and
batches, (a) a CNF lifted to the hyperboloid (``flows.build("cnf@lorentz", …)``: a time-dependent vector field in
tangent coordinates at the origin, ``exp_o ∘ φ_T ∘ log_o``) and (b) a WHC flow (``flows.build("whc", M, 2)``),
both with a standard wrapped normal base at the origin of H² (k = 1). The target is a mixture of wrapped normals
(4 components of σ = 0.3 at distance 1.5 from the origin). Both see the same batches (256 points, Adam 5e-3 with a
cosine schedule, ``--steps`` each). It prints and writes to ``DIR/results.json``
(atomically) the held-out mean log-likelihoods of both flows and of the target itself (the best achievable: an
estimate of its negative entropy), the parameter counts and wall-clock times, and saves
``DIR/density.png``: the three densities (w.r.t. the hyperbolic area) side by side in the Poincaré disk.

The CNF trains in float32 with solver tolerances :data:`TRAIN_TOL` (looser than the library's float64 default,
which float32 cannot reach) and is evaluated at :data:`EVAL_TOL`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

import flows
from experiments.plots import pyplot, save_figure
from experiments.run.files import atomic_write_text
from experiments.run.options import add_config_arguments, common, config_from_args, option
from manifolds import Lorentz, WrappedNormal

#: solver tolerances (rtol = atol) of the CNF while training, and when scoring held-out data / the plot grid
TRAIN_TOL = 1e-4
EVAL_TOL = 1e-6
#: target: a ring of wrapped normals on H²
COMPONENTS, RING_RADIUS, SIGMA = 4, 1.5, 0.3
#: data, optimisation, models
N_TRAIN, N_HELD_OUT, BATCH, LR = 20000, 4000, 256, 5e-3
CNF_HIDDEN, WHC_LAYERS = 64, 2
#: the plot: a square grid over the unit Poincaré disk, drawn up to this Euclidean radius (hyperbolic distance
#: 2·atanh(0.95) ≈ 3.7 from the origin)
GRID, DISK_RADIUS = 160, 0.95


Sampler = Callable[[int, torch.Generator], torch.Tensor]
LogProb = Callable[[torch.Tensor], torch.Tensor]


def mixture(M: Lorentz) -> tuple[Sampler, LogProb]:
    """``(sample(n, generator), log_prob(z))`` of the ring of wrapped normals."""
    angles = torch.arange(COMPONENTS) * (2 * math.pi / COMPONENTS) + math.pi / COMPONENTS
    means = M.expmap0_spatial(RING_RADIUS * torch.stack([angles.cos(), angles.sin()], -1))
    parts = WrappedNormal(means, torch.full((COMPONENTS, 2), SIGMA), M)

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        comp = torch.randint(0, COMPONENTS, (n,), generator=gen)
        v = torch.randn(n, 2, generator=gen) * SIGMA
        return M.translate(means[comp], M.expmap0_spatial(v))

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(parts.log_prob(z.unsqueeze(-2)), dim=-1) - math.log(COMPONENTS)

    return sample, log_prob


def set_tolerance(f: torch.nn.Module, tol: float) -> None:
    for m in f.modules():
        if isinstance(m, flows.ContinuousFlow):
            m.rtol = m.atol = tol


def fit(name: str, q: flows.Flow, train: torch.Tensor, steps: int, seed: int) -> tuple[list[float], float]:
    """Adam on ``-mean log q(batch)``; returns the loss history and the training time in seconds."""
    params = [p for p in q.transform.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=name, file=sys.stderr, dynamic_ncols=True)
    for _ in bar:
        batch = train[torch.randint(0, train.size(0), (BATCH,), generator=gen)]
        loss = -q.log_prob(batch).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: non-finite loss {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(nll=f"{losses[-1]:.3f}")
    return losses, time.perf_counter() - t0


@torch.no_grad()
def mean_log_prob(log_prob: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([log_prob(z[i:i + chunk]) for i in range(0, z.size(0), chunk)])


def density_plot(M: Lorentz, panels: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]], path: Path) -> None:
    plt = pyplot()

    u = torch.linspace(-DISK_RADIUS, DISK_RADIUS, GRID)
    px, py = torch.meshgrid(u, u, indexing="xy")
    p = torch.stack([px, py], -1).reshape(-1, 2)
    inside = p.norm(dim=-1) < DISK_RADIUS
    z = M.from_poincare(p[inside] * M.k.sqrt())
    dens = []
    for _, log_prob in panels:
        d = torch.full((p.size(0),), float("nan"))
        d[inside] = mean_log_prob(log_prob, z).exp().float()
        dens.append(d.reshape(GRID, GRID).numpy())
    vmax = float(np.nanmax(dens[0]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4))
    for ax, (title, _), d in zip(axes, panels, dens):
        ax.imshow(d, origin="lower", extent=(-DISK_RADIUS, DISK_RADIUS, -DISK_RADIUS, DISK_RADIUS), cmap="magma",
                  vmin=0.0, vmax=vmax, interpolation="bilinear")
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.4", lw=0.8))
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
    fig.suptitle("density on H² (w.r.t. hyperbolic area), Poincaré disk", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    save_figure(fig, path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class CnfVsWhcConfig:
    """The settings of ``python -m experiments.tasks.cnf_vs_whc`` (its flags)."""

    out: Optional[Path] = common("out", None, help="output folder (results.json, density.png)", required=True)
    steps: int = option(150, "Adam steps for each flow (default 150: about 2 minutes in all on 2 shared CPU cores)",
                        type=int)
    whc_layers: int = option(WHC_LAYERS, f"WHC coupling layers (default {WHC_LAYERS})", type=int)
    seed: int = common("seed", 0)
    threads: int = common("threads", 1)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m experiments.tasks.cnf_vs_whc")
    add_config_arguments(ap, CnfVsWhcConfig)
    args = config_from_args(CnfVsWhcConfig, ap.parse_args(argv))
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    M = Lorentz(k=1.0)
    sample, target_log_prob = mixture(M)
    train = sample(N_TRAIN, torch.Generator().manual_seed(args.seed + 1))
    held_out = sample(N_HELD_OUT, torch.Generator().manual_seed(args.seed + 2))
    base = WrappedNormal.at_origin(torch.ones(2), M)

    models = {
        "cnf": flows.build("cnf@lorentz", M, 2, hidden=CNF_HIDDEN, rtol=TRAIN_TOL, atol=TRAIN_TOL),
        "whc": flows.build("whc", M, 2, layers=args.whc_layers),
    }
    results: dict[str, Any] = {"target": {"components": COMPONENTS, "ring_radius": RING_RADIUS, "sigma": SIGMA,
                                          "k": 1.0},
                               "steps": args.steps, "batch": BATCH, "lr": LR, "seed": args.seed,
                               "cnf_hidden": CNF_HIDDEN, "whc_layers": args.whc_layers,
                               "cnf_tolerance": {"train": TRAIN_TOL, "eval": EVAL_TOL}}
    results["target"]["held_out_log_likelihood"] = float(mean_log_prob(target_log_prob, held_out).mean())
    dists = {}
    for i, (name, f) in enumerate(models.items()):
        torch.manual_seed(args.seed + 10 + i)
        q = flows.Flow(base, f)
        losses, seconds = fit(name, q, train, args.steps, seed=args.seed + 3)
        set_tolerance(f, EVAL_TOL)
        t0 = time.perf_counter()
        ll = mean_log_prob(q.log_prob, held_out)
        results[name] = {
            "held_out_log_likelihood": float(ll.mean()),
            "held_out_log_likelihood_se": float(ll.std() / math.sqrt(ll.numel())),
            "final_train_nll": float(np.mean(losses[-20:])),
            "parameters": sum(p.numel() for p in f.parameters() if p.requires_grad),
            "train_seconds": seconds,
            "eval_seconds": time.perf_counter() - t0,
        }
        if name == "cnf":
            results[name]["end_time"] = float(f.inner.end_time)
        dists[name] = q

    density_plot(M, [("target (4 wrapped normals)", target_log_prob),
                     (f"CNF  (held-out LL {results['cnf']['held_out_log_likelihood']:.3f})", dists["cnf"].log_prob),
                     (f"WHC  (held-out LL {results['whc']['held_out_log_likelihood']:.3f})", dists["whc"].log_prob)],
                 args.out / "density.png")
    results["plot"] = str(args.out / "density.png")
    atomic_write_text(json.dumps(results, indent=2), args.out / "results.json")

    print(f"held-out mean log-likelihood on H² ({N_HELD_OUT} points, {args.steps} steps each):")
    print(f"  target (true density) {results['target']['held_out_log_likelihood']:8.4f}")
    for name in models:
        r = results[name]
        print(f"  {name:<22s}{r['held_out_log_likelihood']:8.4f} ± {r['held_out_log_likelihood_se']:.4f}   "
              f"({r['parameters']} parameters, train {r['train_seconds']:.1f} s, eval {r['eval_seconds']:.1f} s)")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'density.png'}")
    return results


if __name__ == "__main__":
    main()
