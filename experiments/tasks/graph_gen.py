"""``graph-gen``: two-stage graph generation (paper §4.3, Table 4 and Figure 5).

Stage 1 trains :class:`vae.GraphAutoEncoder` (GAT encoder, distance decoder) for ``epochs`` epochs; stage 2
trains the :class:`vae.FlowPrior` (GAT coupling networks) on the frozen encoder latents for another ``epochs``
epochs (``--schedule paper``; ``--schedule reference`` is the reference code's, :func:`stage_schedule`); then
100 graphs are generated (``--sampler``) and compared with the held-out graphs (:func:`vae.generation_metrics`).
Both stages are one epoch loop here (epoch ``e < ae_epochs`` is stage 1), so a run checkpoints and resumes the
same way in either stage. ``baselines.json`` in ``--out`` holds the Erdős–Rényi and training-graph rows
(:func:`experiments.tasks.graph_gen_baselines.baseline_rows`) that the report prints beside the generators. Data-parallel under
``torchrun``: each rank takes ``batch[rank::world]`` of every mini-batch of graphs and DDP averages the
gradients; rank 0 generates and scores.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from experiments import plots
from experiments.constants import (PAPER_GENERATOR_CURVATURE, REFERENCE_AE_EPOCH_SHARE, REFERENCE_FLOW_LR_FACTOR,
                                   REFERENCE_RADIUS, SCHEDULES)
from experiments.models import make_manifold
from experiments.run import distributed as D
from experiments.run.config import RunConfig
from experiments.run.files import atomic_write_text
from experiments.run.protocol import Job
from experiments.run.steps import adam
from experiments.run.steps import compile_loss
from experiments.tasks.graph_gen_baselines import baseline_rows
from vae import GraphGenerator, generation_metrics
from vae.generation import clean_graph, complete_edge_index


def stage_schedule(schedule: str, epochs: int, lr: float) -> tuple[int, float, int, float, float]:
    r"""``(ae_epochs, ae_lr, flow_epochs, flow_lr, k)`` of the two training stages and the latent curvature.

    ``"paper"``: ``(E, L, E, L, 1)`` (both stages ``--epochs E`` at ``--lr L``, fixed k = 1); ``"reference"``:
    ``(ceil(E/2), L, E, L/10, R²)`` with ``R = 2`` (:data:`~experiments.constants.REFERENCE_RADIUS`), which at the
    command's defaults is the reference code's 50 epochs at 1e-2, 100 epochs at 1e-3, k = 4.

    Example:
        >>> stage_schedule("reference", 100, 1e-2)
        (50, 0.01, 100, 0.001, 4.0)
    """
    if schedule == "paper":
        return epochs, lr, epochs, lr, PAPER_GENERATOR_CURVATURE
    if schedule == "reference":
        return (max(1, math.ceil(epochs * REFERENCE_AE_EPOCH_SHARE)), lr, epochs, lr * REFERENCE_FLOW_LR_FACTOR,
                REFERENCE_RADIUS ** 2)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")


class GraphGenJob(Job):
    live_metric = "flow_nll"

    def __init__(self, cfg: RunConfig, train: list[nx.Graph], test: list[nx.Graph], kind: str, seed: int):
        if cfg.flow == "none":
            raise ValueError("graph-gen needs a flow prior: pass --flow nc (euclidean) or --flow tc/whc (hyperbolic)")
        self.cfg, self.train, self.test, self.kind, self.seed = cfg, train, test, kind, seed
        self.device = D.local_device(cfg.device)
        ae_epochs, ae_lr, flow_epochs, flow_lr, k = stage_schedule(cfg.schedule, cfg.epochs, cfg.lr)
        # fixed curvature (the generator's latents are not warmed up): k = 1, or R² = 4 with --schedule reference
        self.manifold = make_manifold(cfg.model, k=k, dim=cfg.latent_dim)
        # the adjacency rows are padded to the data set's largest graph (its node count, not its edges)
        max_nodes = max(g.number_of_nodes() for g in [*train, *test])
        self.gen = GraphGenerator(self.manifold, cfg.latent_dim, cfg.flow, hidden=cfg.hidden,
                                  flow_layers=cfg.flow_layers, node_input=cfg.node_input,
                                  max_nodes=max_nodes).to(self.device)
        self.gen.sizes = [g.number_of_nodes() for g in train]
        ae, prior = self.gen.autoencoder, self.gen.prior
        # --compile: the tensor parts of both losses through torch.compile (shapes vary with the batch's graphs, so
        # dynamic shapes; the graph conditioners' per-call normalisation is left to graph breaks)
        compiled = cfg.compile
        self._ae_loss = compile_loss(ae.pairs_loss, dynamic=True) if compiled else ae.pairs_loss
        self._prior_log_prob = compile_loss(prior.log_prob_on, dynamic=True) if compiled else prior.log_prob_on
        self.ae_step = D.wrap(ae, lambda graphs: self._ae_loss(*ae.batch(graphs)), self.device)
        self.flow_step = D.wrap(prior, self._flow_loss, self.device)
        self.opt_ae = adam(ae.parameters(), lr=ae_lr)
        self.opt_flow = adam(prior.transform.parameters(), lr=flow_lr)
        self.stage_epochs = ae_epochs
        self.epochs = ae_epochs + flow_epochs
        self.rng = random.Random(seed)
        self.batch_size = cfg.batch_size
        self.latents: list[torch.Tensor] | None = None
        torch.manual_seed(seed * 1000 + D.rank())

    def _flow_loss(self, z: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        return -self._prior_log_prob(z, complete_edge_index(sizes, z.device)).sum() / len(sizes)

    def _embed(self) -> None:
        with torch.no_grad():
            self.latents = [self.gen.autoencoder.embed_graphs([g])[0] for g in self.train]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        order = list(range(len(self.train)))
        self.rng.shuffle(order)
        stage_ae = epoch < self.stage_epochs
        if not stage_ae and self.latents is None:
            self._embed()
        total, steps = torch.zeros((), device=self.device), 0  # summed on the device, read with the history
        for i in range(0, len(order), self.batch_size):
            idx = D.shard(order[i:i + self.batch_size])
            if not idx:
                continue
            if stage_ae:
                self.opt_ae.zero_grad()
                loss = self.ae_step([self.train[j] for j in idx])
                loss.backward()
                self.opt_ae.step()
            else:
                self.opt_flow.zero_grad()
                loss = self.flow_step(torch.cat([self.latents[j] for j in idx]), [self.gen.sizes[j] for j in idx])
                loss.backward()
                self.opt_flow.step()
            total = total + loss.detach()
            steps += 1
        mean = total / max(steps, 1)
        return {"loss": mean, "stage": 1 if stage_ae else 2, **({} if stage_ae else {"flow_nll": mean})}

    def evaluate(self) -> dict[str, float]:
        metrics = None
        if D.is_main():
            self.generated = self.gen.generate(self.cfg.num_generate, seed=self.seed, sampler=self.cfg.sampler)
            metrics = generation_metrics(self.generated, self.test, kind=self.kind)
        return D.broadcast_object(metrics)

    @torch.no_grad()
    def validation_nll(self, graphs: list[nx.Graph]) -> dict[str, float]:
        r"""Per-graph NLLs of the two stages on ``graphs`` (held out from the training graphs; nats per graph):
        ``ae_nll = mean_g -log p(A_g | z_g)`` (:meth:`vae.GraphAutoEncoder.loss`, the decoder given the encoder's
        latents) and ``flow_nll = mean_g -Σ_v log p(z_v)`` (the prior on those latents). ``flow_nll`` is a density
        on the latent manifold: it compares runs with the same curvature and encoder only."""
        ae = self.gen.autoencoder
        ae_nll = float(ae.loss(graphs))
        z = [ae.embed_graphs([g])[0] for g in graphs]
        flow_nll = float(sum(-self.gen.prior.log_prob(zi, [len(zi)]).sum() for zi in z) / len(graphs))
        return {"ae_nll": ae_nll, "flow_nll": flow_nll}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.state_dict(), "opt_ae": self.opt_ae.state_dict(),
                "opt_flow": self.opt_flow.state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["gen"])
        self.opt_ae.load_state_dict(state["opt_ae"])
        self.opt_flow.load_state_dict(state["opt_flow"])
        self.rng.setstate(state["rng"])
        self.latents = None  # recomputed from the restored encoder at the next stage-2 epoch

    def artifacts(self, folder: Path, history: list[dict]) -> dict[str, Any]:
        # the reference rows of the report (the same for every seed: the Erdős–Rényi graphs are drawn with --seed)
        rows = baseline_rows([clean_graph(g) for g in self.train], self.test, self.kind, seed=self.cfg.seed,
                             num=self.cfg.num_generate)
        atomic_write_text(json.dumps({"dataset": self.cfg.dataset, **rows}, indent=2),
                          folder.parent / "baselines.json")
        plots.graphs(self.generated[:8], folder / "generated_graphs.png",
                     f"generated {self.cfg.dataset} ({self.cfg.flow.upper()})")
        if self.cfg.latent_dim == 2:
            z, _ = self.gen.autoencoder.embed_graphs(self.test[:1])
            pts, in_disk = plots.disk_coordinates(self.manifold, z.detach())
            g = self.test[0]
            depth = nx.single_source_shortest_path_length(g, max(g.degree, key=lambda t: t[1])[0])
            plots.latents([(pts, in_disk, [depth[v] for v in g.nodes()], "encoder latents of a test graph")],
                          folder / "latents_poincare.png", "hops from the hub")
        return {"generated_sizes": [g.number_of_nodes() for g in self.generated]}
