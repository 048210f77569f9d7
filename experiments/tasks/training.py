"""Plain training loops for scripts and tests: the graph VAE and the two-stage graph generator, with none of the
commands' machinery (the jobs of :mod:`experiments.tasks.graph_recon` and :mod:`experiments.tasks.graph_gen` add compilation,
DDP, checkpoints and metrics to the same steps)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import networkx as nx
import torch

from vae import EdgeSplit, GraphGenerator, GraphVAE
from vae.generation import clean_graph

Tensor = torch.Tensor


def fit_graph_vae(model: GraphVAE, x: Tensor | None, split: EdgeSplit, *, epochs: int, lr: float = 1e-2,
                  schedule=None, eval_every: int = 0) -> list[dict[str, float]]:
    """Full-batch training of a :class:`~vae.GraphVAE` on ``split.train_pos`` (message passing on
    ``split.train_edge_index``); returns one record per epoch (``loss``, ``recon``, ``kl``, and ``val_auc`` / ``val_ap`` every ``eval_every`` epochs).
    ``schedule`` is an optional :class:`~vae.curvature.CurvatureSchedule` stepped at each epoch start. (The
    ``graph-recon`` command's job adds compilation, CUDA graphs, checkpoints and model selection.)"""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    graph = model.prepare_graph(split.train_edge_index, split.num_nodes)
    history, terms_per_epoch = [], []
    for epoch in range(epochs):
        if schedule is not None:
            schedule.step(epoch)
        model.train()
        opt.zero_grad()
        terms = model.loss(x, graph, split.train_pos)
        terms.total.backward()
        opt.step()
        # the loss terms stay on the device; they are read once, at the end (no host sync per step)
        terms_per_epoch.append(torch.stack([terms.total, terms.recon, terms.kl]).detach())
        rec: dict[str, float] = {"epoch": epoch}
        if eval_every and (epoch + 1) % eval_every == 0:
            m = model.evaluate(x, graph, split.val_pos, split.val_neg)
            rec.update(val_auc=m["auc"], val_ap=m["ap"])
        history.append(rec)
    if terms_per_epoch:
        for rec, (loss, recon, kl) in zip(history, torch.stack(terms_per_epoch).tolist()):
            rec.update(loss=loss, recon=recon, kl=kl)
    return history


def fit_graph_generator(gen: GraphGenerator, graphs: Sequence[nx.Graph], *, ae_epochs: int = 100,
                        flow_epochs: int = 100, lr: float = 1e-2, batch_size: int = 16,
                        seed: int = 0) -> dict[str, list[float]]:
    """Train stage 1 (``ae_epochs``) then stage 2 (``flow_epochs``) with Adam; returns the loss curves. (The
    ``graph-gen`` command's job adds compilation, DDP, checkpoints and metrics to the same two stages.)"""
    graphs = [clean_graph(g) for g in graphs]
    gen.sizes = [g.number_of_nodes() for g in graphs]
    rng = random.Random(seed)
    curves: dict[str, list[Tensor]] = {"autoencoder": [], "flow": []}
    opt = torch.optim.Adam(gen.autoencoder.parameters(), lr=lr)
    order = list(range(len(graphs)))
    for _ in range(ae_epochs):
        rng.shuffle(order)
        total = torch.zeros(())  # the epoch's loss, summed on the device (no host read per step)
        for i in range(0, len(order), batch_size):
            opt.zero_grad()
            loss = gen.autoencoder.loss([graphs[j] for j in order[i:i + batch_size]])
            loss.backward()
            opt.step()
            total = total.to(loss.device) + loss.detach()
        curves["autoencoder"].append(total)
    with torch.no_grad():
        latents = [gen.autoencoder.embed_graphs([g])[0] for g in graphs]
    opt = torch.optim.Adam(gen.prior.transform.parameters(), lr=lr)
    for _ in range(flow_epochs):
        rng.shuffle(order)
        total = torch.zeros(())
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            z = torch.cat([latents[j] for j in idx])
            opt.zero_grad()
            loss = -gen.prior.log_prob(z, [gen.sizes[j] for j in idx]).sum() / len(idx)
            loss.backward()
            opt.step()
            total = total.to(loss.device) + loss.detach()
        curves["flow"].append(total)
    # one host read for the whole curves
    return {k: torch.stack(v).tolist() if v else [] for k, v in curves.items()}
