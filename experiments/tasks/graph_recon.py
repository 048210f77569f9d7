"""``graph-recon``: graph VAE link prediction (paper §4.2, Table 3): test ROC-AUC and AP on held-out edges.

Reported twice: at the last epoch (``auc``, ``ap``) and at the evaluation (every 1/30 of the epochs) with the best
validation AUC (``auc_at_best_val``, ``ap_at_best_val``, ``best_val_epoch``): model selection on the validation
edges, as early stopping would do; the test edges are scored at those evaluations but never choose anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import geoopt
import numpy as np
import torch

from experiments import plots
from experiments.datasets import GraphData
from experiments.constants import EMBEDDING_BURN_IN_EPOCHS, EMBEDDING_BURN_IN_LR_FACTOR
from experiments.models import EMBEDDING, curvature_record, embedding_manifold, make_manifold, paper_name
from experiments.run.config import RunConfig
from experiments.run.protocol import Job
from experiments.run.steps import TrainStep
from experiments.run.steps import adam
from vae import CurvatureSchedule, EdgeSplit, GraphVAE, split_edges
from vae.embedding import HyperbolicEmbedding
from vae.graph import GraphLoss
from vae.hierarchy import hierarchy_metrics


class LinkModel(Protocol):
    """What :class:`GraphReconJob` asks of its model (:class:`vae.GraphVAE` and
    :class:`vae.embedding.HyperbolicEmbedding` answer it): the training graph prepared once, a training loss with its
    fresh negatives drawn on the device, AUC/AP on node pairs, and the node latents."""

    def prepare_graph(self, edge_index: torch.Tensor, num_nodes: int | None = None) -> Any: ...

    def loss(self, x: torch.Tensor | None, graph: Any, pos_pairs: torch.Tensor) -> GraphLoss: ...

    def evaluate(self, x: torch.Tensor | None, graph: Any, pos_pairs: torch.Tensor,
                 neg_pairs: torch.Tensor) -> dict[str, float]: ...

    def embed(self, x: torch.Tensor | None, graph: Any, sample: bool | None = None) -> torch.Tensor: ...


class GraphReconJob(Job):
    live_metric = "val_auc"

    def __init__(self, cfg: RunConfig, data: GraphData, seed: int, split: EdgeSplit | None = None) -> None:
        """``split``: the edge split of ``data`` for ``seed`` if already made (``split_edges(..., seed=seed)``;
        the benchmark reuses one for several models), else it is made here."""
        self.cfg = cfg
        self.data = data
        self.seed = seed
        self.device = torch.device(cfg.device)
        split = split if split is not None else split_edges(data.edge_index, data.num_nodes, seed=seed)
        self.split = split.to(self.device)
        self.x = data.x.to(self.device) if data.x is not None else None
        cuda_graph = cfg.uses_cuda_graph and self.device.type == "cuda"
        self.model: LinkModel
        if cfg.model == EMBEDDING:
            # the classic baseline: points on a manifold of fixed curvature radius --final-radius, RiemannianAdam
            self.manifold = embedding_manifold(cfg.embedding_manifold, cfg.final_radius)
            self.model = HyperbolicEmbedding(self.manifold, data.num_nodes, cfg.latent_dim,
                                             negatives=cfg.negatives).to(self.device)
            self.opt = geoopt.optim.RiemannianAdam(self.model.parameters(), lr=cfg.lr)
            self.schedule = CurvatureSchedule(self.manifold, "fixed")
        else:
            self.manifold = make_manifold(cfg.model, dim=cfg.latent_dim)
            self.model = GraphVAE(self.manifold, None if data.x is None else data.x.size(1), cfg.latent_dim,
                                  num_nodes=data.num_nodes, hidden=cfg.hidden,
                                  flow=None if cfg.flow == "none" else cfg.flow, flow_layers=cfg.flow_layers,
                                  flow_hidden=cfg.flow_hidden, flow_conditioner=cfg.flow_conditioner,
                                  decoder=cfg.decoder, kl_weight=cfg.kl_weight).to(self.device)
            self.opt = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            capturable=cuda_graph)
            # the paper's graph schedule: R = 11 -> 2 over 10 epochs, then fixed at R = 2 (--final-radius; k is never
            # trained, so the step's autograd graph never changes and can be captured)
            self.schedule = CurvatureSchedule(self.manifold, "warmup", after="fixed", final_radius=cfg.final_radius)
        # the graph is checked and prepared once (normalised adjacency, non-edge sampler on the device), so a
        # training step reads nothing on the host and has static shapes
        self.graph = self.model.prepare_graph(self.split.train_edge_index, data.num_nodes)
        self.step = TrainStep(self.opt, self._loss, compile=cfg.compile, cuda_graph=cuda_graph)
        self.epochs = cfg.epochs
        self.eval_every = max(1, self.epochs // 30)
        # model selection on the validation edges only: the test metrics at the evaluation with the best
        # validation AUC so far (reported beside the last-epoch ones; the test edges never choose anything)
        self.best: dict[str, float] = {}

    def _loss(self) -> torch.Tensor:
        """``(loss, recon, kl)`` of one training step: fresh non-edges (as many as training edges, drawn on the
        device) against the training edges."""
        terms = self.model.loss(self.x, self.graph, self.split.train_pos)
        return torch.stack([terms.total, terms.recon, terms.kl])

    def _burn_in(self, epoch: int) -> None:
        """The embedding's learning rate at ``epoch``: ``--lr`` times :data:`EMBEDDING_BURN_IN_LR_FACTOR` for the
        first :data:`EMBEDDING_BURN_IN_EPOCHS` epochs (Nickel & Kiela's burn-in), then ``--lr`` (host floats only)."""
        lr = self.cfg.lr * (EMBEDDING_BURN_IN_LR_FACTOR if epoch < EMBEDDING_BURN_IN_EPOCHS else 1.0)
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        k = self.schedule.step(epoch)
        if self.cfg.model == EMBEDDING:
            self._burn_in(epoch)
        self.model.train()
        terms = self.step()
        rec: dict[str, Any] = {"loss": terms[0], "recon": terms[1], "kl": terms[2]}  # read later, in batches
        if k is not None:
            rec["k"] = k
        if (epoch + 1) % self.eval_every == 0:
            s = self.split
            m = self.model.evaluate(self.x, self.graph, s.val_pos, s.val_neg)
            rec.update(val_auc=m["auc"], val_ap=m["ap"])
            if m["auc"] > self.best.get("val_auc", -1.0):
                test = self.model.evaluate(self.x, self.graph, s.test_pos, s.test_neg)
                self.best = {"val_auc": m["auc"], "epoch": float(epoch + 1), "auc": test["auc"], "ap": test["ap"]}
        return rec

    def evaluate(self) -> dict[str, float]:
        s = self.split
        test = self.model.evaluate(self.x, self.graph, s.test_pos, s.test_neg)
        val = self.model.evaluate(self.x, self.graph, s.val_pos, s.val_neg)
        out = {"auc": test["auc"], "ap": test["ap"], "val_auc": val["auc"], "val_ap": val["ap"]}
        if val["auc"] > self.best.get("val_auc", -1.0):  # the last epoch is the best one
            self.best = {"val_auc": val["auc"], "epoch": float(self.epochs), "auc": test["auc"], "ap": test["ap"]}
        out.update(auc_at_best_val=self.best["auc"], ap_at_best_val=self.best["ap"], best_val_epoch=self.best["epoch"])
        out.update(curvature_record(self.manifold))
        return out

    def optional_metrics(self) -> dict[str, float]:
        """The hierarchy metrics (:meth:`hierarchy`), computed once the seed's link-prediction results are on
        disk."""
        return self.hierarchy()

    def hierarchy(self) -> dict[str, float]:
        """Graph-reconstruction MAP, distortion and (where the graph has depths) the Spearman correlation of depth
        and distance from the origin, of the posterior means through the flow on the whole graph
        (:func:`vae.hierarchy.hierarchy_metrics`: memory linear in nodes + edges; exact up to
        ``HIERARCHY_EXACT_MAX_NODES`` nodes, else over ``--hierarchy-sources`` sampled source nodes, seeded by the
        run's seed, with standard errors)."""
        return hierarchy_metrics(self.manifold, self._mean_latents(), self.data.edge_index, self.data.depths,
                                 sources=self.cfg.hierarchy_sources, seed=self.seed)

    def _mean_latents(self) -> torch.Tensor:
        """The node latents of the posterior means through the flow (eval mode, no gradients)."""
        self.model.eval()
        with torch.no_grad():
            return self.model.embed(self.x, self.graph, sample=False)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.best = dict(state.get("best", {}))

    def latent_panel(self):
        """``(points, in_disk, colours, title)`` of the node latents (posterior means through the flow)."""
        pts, in_disk = plots.disk_coordinates(self.manifold, self._mean_latents())
        return pts, in_disk, self.data.labels, paper_name(self.cfg.model, self.cfg.flow)

    def artifacts(self, folder: Path, history: list[dict]) -> dict[str, Any]:
        if self.cfg.latent_dim != 2:
            return {}
        panel = self.latent_panel()
        np.save(folder / "latents_2d.npy", panel[0])
        plots.latents([panel], folder / "latents_poincare.png", self.data.label_name)
        return {}
