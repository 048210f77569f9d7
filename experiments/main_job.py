"""``python -m experiments main`` (``make demo``): the README's main job.

Graph reconstruction on the embedded hierarchical graph (``--dataset tree``: a balanced 3-ary tree of depth 5
with features diffused from parent to child; nothing to download) with three models, N-VAE (ℝ²), H-VAE (H²)
and WHC (H² + wrapped hyperboloid coupling), each trained by ``graph-recon``. Prints a test AUC/AP table and
draws the three latent spaces side by side (``<out>/latents_poincare.png``: the Poincaré disk for H², the plane
for ℝ², nodes coloured by depth).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

MAIN_MODELS = (("euclidean", "none"), ("hyperbolic", "none"), ("hyperbolic", "whc"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=1000, help="full-batch training epochs per model")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--seeds", type=int, default=1, help="seeded runs per model")
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_main(args: argparse.Namespace) -> int:
    from . import datasets as ds
    from . import plots
    from .commands import run_command
    from .config import RunConfig
    from .models import paper_name

    t0 = time.perf_counter()
    data = ds.load_graph("tree")
    print(f"main job: graph reconstruction on the embedded hierarchical graph ({data.summary()}), "
          f"{args.epochs} epochs, lr {args.lr}, {args.seeds} seed(s) per model", flush=True)
    rows, panels = [], []
    for model, flow in MAIN_MODELS:
        cfg = RunConfig.for_command("graph-recon", dataset="tree", model=model, flow=flow, latent_dim=2,
                                    epochs=args.epochs, seeds=args.seeds, lr=args.lr,
                                    out=args.out / paper_name(model, flow).lower(), csv=args.out / "results.csv",
                                    overwrite=True,  # the demo replaces its own previous output
                                    no_progress=args.no_progress)
        res = run_command(cfg)
        s = res["summary"]
        rows.append((paper_name(model, flow), s["auc"], s["ap"], res["wall_s"]))
        lat = cfg.out / "seed0" / "latents_2d.npy"
        panels.append((np.load(lat), model == "hyperbolic", data.labels, paper_name(model, flow)))
    plots.latents(panels, args.out / "latents_poincare.png", "depth")
    wall = time.perf_counter() - t0
    lines = ["", f"{'model':<7} {'test AUC':>16} {'test AP':>16} {'train s':>8}"]
    for name, auc, ap, w in rows:
        lines.append(f"{name:<7} {auc['mean']:>8.3f} ± {auc['std']:.3f} {ap['mean']:>8.3f} ± {ap['std']:.3f} {w:>8.1f}")
    lines.append(f"\nPoincaré-disk plot: {args.out / 'latents_poincare.png'}; results: {args.out}/*/results.json; "
                 f"total {wall:.0f} s")
    print("\n".join(lines), flush=True)
    summary = {"rows": [{"model": n, "auc": a, "ap": p, "wall_s": w} for n, a, p, w in rows], "wall_s": wall}
    (args.out / "main.json").write_text(json.dumps(summary, indent=2))
    return 0
