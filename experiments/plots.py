"""Plots of the experiments (matplotlib, Agg backend): training curves, latents in the Poincaré disk, graphs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import networkx as nx
import numpy as np
import torch


def save_figure(fig, path: Path, **savefig_kwargs) -> None:
    """``fig.savefig`` to a temporary file beside ``path``, then a rename: a reader never finds half a picture, and a
    failed write (full disk, unwritable folder) leaves nothing behind and raises its ``OSError``. The folder is
    created; the format is ``path``'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    try:
        fig.savefig(tmp, **savefig_kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (files only, no display needed)."""
    import matplotlib  # lazy: import cost (~2 s measured), paid only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(histories: Sequence[Sequence[dict]], path: Path, title: str = "") -> None:
    """Training loss per epoch (one line per seed) and, if recorded, the validation metrics."""
    plt = pyplot()
    keys = [k for k in ("val_auc", "val_ap", "test_elbo", "flow_nll") if any(k in r for h in histories for r in h)]
    fig, axes = plt.subplots(1, 1 + bool(keys), figsize=(5 * (1 + bool(keys)), 3.5), squeeze=False)
    ax = axes[0, 0]
    for i, h in enumerate(histories):
        if h:
            ax.plot([r["epoch"] for r in h], [r["loss"] for r in h], lw=0.8, label=f"seed {i}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("symlog")
    ax.set_title(title)
    if keys:
        ax2 = axes[0, 1]
        for i, h in enumerate(histories):
            for k in keys:
                pts = [(r["epoch"], r[k]) for r in h if k in r]
                if pts:
                    ax2.plot(*zip(*pts), lw=0.8, label=f"{k} (seed {i})")
        ax2.set_xlabel("epoch")
        ax2.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def disk_coordinates(manifold, z) -> tuple[np.ndarray, bool]:
    """2-D latents as plot coordinates: the unit Poincaré disk for a hyperbolic manifold (``to_poincare / sqrt(k)``),
    the plane itself for ℝ², the tangent coordinates ``log_o(z)`` at the origin otherwise (S², a product: not a
    disk). Returns ``(points, in_disk)``."""

    with torch.no_grad():
        z = z.detach()
        if manifold.curvature_sign == -1 and manifold.curvature().numel() == 1:  # the ball of radius sqrt(k), k = -1/curvature, scaled to the unit disk
            p = manifold.to_poincare(z)
            return (p * (-manifold.curvature().detach()).sqrt()).cpu().double().numpy(), True
        p = z if manifold.coords_are_points else manifold.logmap0_spatial(z)
        return p.cpu().double().numpy(), False


def latent_panel(ax, points: np.ndarray, in_disk: bool, colours, title: str, colour_name: str = "") -> None:
    sc = ax.scatter(points[:, 0], points[:, 1], c=colours, s=6, cmap="viridis", linewidths=0)
    if in_disk:
        t = np.linspace(0, 2 * math.pi, 256)
        ax.plot(np.cos(t), np.sin(t), color="k", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title + ("" if in_disk else " (ℝ², not a disk)"), fontsize=9)
    if colours is not None:
        cb = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.04)
        cb.set_label(colour_name, fontsize=8)


def radius(points: np.ndarray, in_disk: bool) -> np.ndarray:
    """Distance from the origin of plot coordinates (:func:`disk_coordinates`): ``2·artanh|p|`` on the unit
    Poincaré disk (the hyperbolic distance over the curvature radius, ``dist0 / sqrt(k)``), ``|z|`` in the plane.

    Example:
        >>> radius(np.array([[np.tanh(1.5), 0.0]]), True).round(6).tolist()
        [3.0]
    """
    r = np.linalg.norm(points, axis=-1)
    return 2 * np.arctanh(np.minimum(r, np.nextafter(1.0, 0.0))) if in_disk else r


def latents(panels: Sequence[tuple[np.ndarray, bool, object, str]], path: Path, colour_name: str = "",
            marked: tuple[int, str] | None = None, depths: np.ndarray | None = None) -> None:
    """One panel per model: ``(points, in_disk, colours, title)``; ``marked = (node, label)`` circles one node
    (e.g. the root of a hierarchy) in every panel. With ``depths``, a second row shows each model's distance from
    the origin by depth (box plots): ``2·artanh|p|`` for a point ``p`` of the unit Poincaré disk (the hyperbolic
    distance in units of the curvature radius, which the disk squeezes towards its rim), ``|z|`` in ℝ²."""
    plt = pyplot()
    rows = 1 if depths is None else 2
    fig, axes = plt.subplots(rows, len(panels), figsize=(4.2 * len(panels), 4 * rows), squeeze=False)
    for ax, (pts, in_disk, colours, title) in zip(axes[0], panels):
        latent_panel(ax, pts, in_disk, colours, title, colour_name)
        if marked is not None:
            node, label = marked
            ax.scatter(pts[node, 0], pts[node, 1], s=90, facecolors="none", edgecolors="red", linewidths=1.5,
                       label=label, zorder=5)
            ax.legend(loc="lower right", fontsize=7)
    if depths is not None:
        depths = np.asarray(depths)
        levels = np.unique(depths)
        for ax, (pts, in_disk, _, title) in zip(axes[1], panels):
            r = radius(pts, in_disk)
            ax.boxplot([r[depths == lv] for lv in levels], positions=list(levels), widths=0.6, showfliers=False)
            ax.set_xlabel(colour_name or "depth", fontsize=8)
            ax.set_ylabel("hyperbolic distance from the origin / R" if in_disk else "|z|", fontsize=8)
            ax.set_title(f"{title}: distance from the origin by {colour_name or 'depth'}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def graphs(gs, path: Path, title: str = "", ncols: int = 4) -> None:
    """A grid of (generated) graphs, spring layout."""

    plt = pyplot()
    n = len(gs)
    rows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(rows, ncols, figsize=(3 * ncols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, g in zip(axes.flat, gs):
        nx.draw_networkx(g, pos=nx.spring_layout(g, seed=0), ax=ax, node_size=12, with_labels=False, width=0.6)
        ax.set_title(f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
