"""Running one configured command (``density``, ``graph-recon``, ``graph-gen``): load its data, make a job per seed
and hand them to :func:`experiments.runs.run`. The command line (:mod:`experiments.__main__`), the main job and
``reproduce`` all call :func:`run_command`, and none of them imports another (no import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import datasets as ds


def _default_out(cfg: dict[str, Any]) -> Path:
    return Path("runs") / cfg["command"] / f"{cfg['dataset']}-{cfg['model']}-{cfg['flow']}-d{cfg['latent_dim']}"


def run_command(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configured command (``cfg`` as produced by :func:`validate`); returns its results."""
    import torch

    from . import distributed as D
    from .models import paper_name
    from .runs import run

    torch.set_num_threads(cfg.get("threads") or 1)
    D.init_from_env(cfg["device"])
    command = cfg["command"]
    describe = f"{command} {cfg['dataset']} {paper_name(cfg['model'], cfg['flow'])}"
    if command == "density":
        from .density import DensityJob

        data = ds.load_density(cfg["dataset"], cfg.get("data_root"))
        cfg.setdefault("data_note", data.note)
        cfg["data_note"] = data.note
        make = lambda seed: DensityJob(cfg, data, seed)  # noqa: E731
    elif command == "graph-recon":
        from .graph_recon import GraphReconJob

        data = ds.load_graph(cfg["dataset"], cfg.get("data_root"))
        if cfg.get("latent_dim") is None:
            cfg["latent_dim"] = data.latent_dim
        cfg["data_note"] = data.summary()
        make = lambda seed: GraphReconJob(cfg, data, seed)  # noqa: E731
    elif command == "graph-gen":
        from .graph_gen import GraphGenJob

        train, test, kind = ds.load_graph_set(cfg["dataset"])
        cfg["data_note"] = f"{len(train)} train / {len(test)} test graphs ({kind})"
        make = lambda seed: GraphGenJob(cfg, train, test, kind, seed)  # noqa: E731
    else:  # pragma: no cover
        raise ValueError(f"unknown command {command!r}")
    if cfg.get("out") is None:
        cfg["out"] = _default_out(cfg)
    return run(command, cfg, make, describe=describe, progress=not cfg.get("no_progress"))
