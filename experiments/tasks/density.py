"""``density``: VAE density estimation (paper §4.1, Tables 1-2): test log-likelihood by IWAE (K = 500).

Data-parallel under ``torchrun``: every rank takes ``batch[rank::world]`` of each global batch (the same
shuffled order on all ranks), DDP averages the gradients, and the test set is split across ranks for the IWAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import plots
from experiments.datasets import DensityData
from experiments.models import curvature_record, make_manifold, paper_name
from experiments.run import distributed as D
from experiments.run.config import RunConfig
from experiments.run.protocol import Job
from experiments.run.steps import compile_loss
from flows import FlowDistribution
from vae import VAE, CurvatureSchedule, GaussianLikelihood, evaluate_log_likelihood


class DensityJob(Job):
    live_metric = "test_elbo"

    def __init__(self, cfg: RunConfig, data: DensityData, seed: int) -> None:
        self.cfg = cfg
        self.data = data
        self.device = D.local_device(cfg.device)
        self.manifold = make_manifold(cfg.model, dim=cfg.latent_dim)
        dim = data.train.size(1)
        lik = GaussianLikelihood(dim, scale=1.0, learnable=False) if data.likelihood == "gaussian-unit" \
            else data.likelihood
        self.model = VAE(self.manifold, dim, cfg.latent_dim, hidden=cfg.hidden or data.hidden,
                         flow=None if cfg.flow == "none" else cfg.flow, flow_layers=cfg.flow_layers,
                         flow_hidden=cfg.flow_hidden, likelihood=lik).to(self.device)
        self.step_fn = D.wrap(self.model, self._loss, self.device)  # DDP when under torchrun
        if cfg.compile:
            if D.is_distributed():
                raise ValueError("--compile is not supported under torchrun (DDP) yet; run without --compile")
            self.step_fn = compile_loss(self.step_fn)  # one graph per batch size (the last batch may be smaller)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        # the paper's VAE schedule: R = 11 -> 2 over 10 epochs, then learnable
        self.schedule = CurvatureSchedule(self.manifold, "warmup", after="learnable")
        self.batch_size = cfg.batch_size or data.batch_size
        self.epochs = cfg.epochs
        self.train = data.train.to(self.device)
        self.test = data.test.to(self.device)
        self.seed = seed
        self.monitor_every = max(1, self.epochs // 20)
        # rank-specific sampling noise (reparameterisation, binarisation) on top of the shared seed
        torch.manual_seed(seed * 1000 + D.rank())

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x)

    def _binarize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(x) if self.data.binarize else x

    def train_epoch(self, epoch: int) -> dict[str, float]:
        k = self.schedule.step(epoch)
        self.model.train()
        n = self.train.size(0)
        # the same permutation on every rank: drawn from a generator seeded by (seed, epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).to(self.device)
        total, count = torch.zeros((), device=self.device), 0  # summed on the device, read with the history
        world = D.world_size()
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            if idx.numel() < world:
                continue
            x = self._binarize(self.train[D.shard(idx)])
            self.opt.zero_grad()
            loss = self.step_fn(x)
            loss.backward()
            D.sync_unmanaged_grads(self.step_fn)  # log k, trainable only after the warm-up
            self.opt.step()
            total = total + loss.detach() * x.size(0)
            count += x.size(0)
        rec: dict[str, Any] = {"loss": total / max(count, 1)}
        if k is not None:
            rec["k"] = k
        if (epoch + 1) % self.monitor_every == 0:  # monitoring only (shown live, plotted); never used to select
            self.model.eval()
            with torch.no_grad():
                rec["test_elbo"] = float(self.model.elbo(self.test).elbo.mean())
            self.model.train()
        return rec

    def evaluate(self) -> dict[str, float]:
        part = D.shard(self.test)
        ll = evaluate_log_likelihood(self.model, part, self.cfg.iwae_samples, batch_size=self.cfg.eval_batch)
        lls = torch.cat([t.cpu() for t in D.all_gather_object(ll.cpu())])
        out = {"test_ll": float(lls.mean()), "test_examples": int(lls.numel())}
        out.update(curvature_record(self.manifold))
        if "k" in out:
            if D.is_distributed():  # DDP keeps replicas identical, the curvature included
                ks = D.all_gather_object(out["k"])
                out["k_rank_spread"] = max(ks) - min(ks)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def artifacts(self, folder: Path, history: list[dict]) -> dict[str, Any]:
        if self.cfg.latent_dim != 2:
            return {}
        self.model.eval()
        with torch.no_grad():
            # the embedding of each test image: the flow's image of its posterior's location (a wrapped normal's
            # loc, a vMF's mode, a product's per-factor locations), as the graph VAE reports it
            z = FlowDistribution(self.model.encode(self.test), self.model.flow).mean_latent().points()
        pts, in_disk = plots.disk_coordinates(self.manifold, z)
        np.save(folder / "latents_2d.npy", pts)
        labels = self.data.test_labels
        plots.latents([(pts, in_disk, labels, paper_name(self.cfg.model, self.cfg.flow))],
                      folder / "latents_poincare.png", "depth" if self.data.name == "bdp" else "label")
        return {}
