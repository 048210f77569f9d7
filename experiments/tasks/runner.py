"""Running one configured command (``density``, ``graph-recon``, ``graph-gen``; a
:class:`~experiments.run.config.RunConfig`): load its data, make a job per seed and hand them to
:func:`experiments.run.protocol.run`. The command line (:mod:`experiments.cli`), the main job and
``reproduce`` all call :func:`run_command`, and none of them imports another (no import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments import datasets as ds
from experiments.run.config import RunConfig


def _default_out(cfg: RunConfig) -> Path:
    return Path("runs") / cfg.command / f"{cfg.dataset}-{cfg.model}-{cfg.flow}-d{cfg.latent_dim}"


def run_command(cfg: RunConfig) -> dict[str, Any]:
    """Run one configured command; returns its results (``results["config"]`` is the resolved ``cfg``: the
    dataset's latent dimension where ``cfg.latent_dim`` is ``None``, the default ``--out``)."""
    import torch

    from experiments.run import distributed as D
    from experiments.models import paper_name
    from experiments.run.protocol import run

    torch.set_num_threads(cfg.threads)
    D.init_from_env(cfg.device)
    command = cfg.command
    describe = f"{command} {cfg.dataset} {paper_name(cfg.model, cfg.flow)}"
    if command == "density":
        from experiments.tasks.density import DensityJob

        data = ds.load_density(cfg.dataset, cfg.data_root)
        note = data.note
        job = lambda c, seed: DensityJob(c, data, seed)  # noqa: E731
    elif command == "graph-recon":
        from experiments.tasks.graph_recon import GraphReconJob

        data = ds.load_graph(cfg.dataset, cfg.data_root)
        cfg = cfg.replace(latent_dim=cfg.latent_dim or data.latent_dim)
        note = data.summary()
        job = lambda c, seed: GraphReconJob(c, data, seed)  # noqa: E731
    elif command == "graph-gen":
        from experiments.tasks.graph_gen import GraphGenJob

        train, test, kind = ds.load_graph_set(cfg.dataset)
        note = f"{len(train)} train / {len(test)} test graphs ({kind})"
        job = lambda c, seed: GraphGenJob(c, train, test, kind, seed)  # noqa: E731
    else:  # pragma: no cover - RunConfig refuses other commands
        raise ValueError(f"unknown command {command!r}")
    cfg = cfg.replace(out=cfg.out or _default_out(cfg), extra={**cfg.extra, "data_note": note})
    return run(command, cfg, lambda seed: job(cfg, seed), describe=describe, progress=not cfg.no_progress)
