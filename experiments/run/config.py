"""``RunConfig``: the settings of one run of ``density``, ``graph-recon`` or ``graph-gen``, with their defaults
written once.

The command line builds it (its option defaults are read from here), :func:`experiments.tasks.runner.run_command`
resolves what depends on the data (``latent_dim``, ``out``), ``results.json`` / ``config.json`` store it, and
``--resume`` compares its :data:`RUN_DEFINING` fields with the stored ones. The main job and ``reproduce`` build it
with :meth:`RunConfig.for_command`, naming only what differs from the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from experiments.constants import EMBEDDING_LR, EMBEDDING_RADIUS, SCHEDULES
from experiments.models import EMBEDDING, EMBEDDING_MANIFOLDS
from vae.constants import EMBEDDING_NEGATIVES, NODE_INPUTS, SAMPLERS

COMMANDS = ("density", "graph-recon", "graph-gen")

#: per command, the defaults that differ from :class:`RunConfig`'s (the paper's settings, App. E)
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "density": {"dataset": "bdp", "flow": "none", "epochs": 80, "lr": 1e-3, "latent_dim": 2},
    "graph-recon": {"dataset": "tree", "epochs": 3000, "lr": 1e-3, "hidden": 16},
    "graph-gen": {"dataset": "trees", "epochs": 100, "lr": 1e-2, "latent_dim": 2, "hidden": 32, "batch_size": 16},
}

#: per ``--model``, the graph-recon defaults that differ from the command's (applied where ``model`` is given:
#: :meth:`RunConfig.for_command`, and the command line's ``--flow`` / ``--lr`` / ``--final-radius`` when left out)
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {EMBEDDING: {"flow": "none", "lr": EMBEDDING_LR,
                                                         "final_radius": EMBEDDING_RADIUS}}

#: the settings that define a run (model, data, training); ``--resume`` refuses to continue a run made with others.
#: Not among them: ``seeds`` (a resumed run may add seeds), and what changes speed or output only (device,
#: threads, compile, progress, checkpoint interval, paths).
RUN_DEFINING = ("command", "dataset", "model", "flow", "latent_dim", "epochs", "lr", "hidden", "flow_layers",
                "flow_hidden", "flow_conditioner", "kl_weight", "weight_decay", "decoder", "final_radius", "batch_size", "iwae_samples", "eval_batch",
                "num_generate", "node_input", "schedule", "sampler", "embedding_manifold", "negatives", "seed")

#: the settings of a graph VAE that ``--model embedding`` has no use for (it has no encoder, posterior, flow or
#: decoder), with why; set to anything but their defaults they are refused
VAE_ONLY: dict[str, str] = {
    "flow": "an embedding has no posterior to transform (use --flow none)",
    "hidden": "an embedding has no encoder", "flow_layers": "an embedding has no flow",
    "flow_hidden": "an embedding has no flow", "flow_conditioner": "an embedding has no flow",
    "kl_weight": "an embedding has no KL term", "decoder": "an embedding scores an edge by -distance",
    "weight_decay": "RiemannianAdam's weight decay is Euclidean, meaningless on the manifold"}
#: the settings of ``--model embedding`` only, refused with another model
EMBEDDING_ONLY = ("embedding_manifold", "negatives")

_PATHS = ("data_root", "out", "csv")


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run (see the module docstring); frozen: a changed setting is a new config
    (``dataclasses.replace``).

    Example:
        >>> cfg = RunConfig.for_command("graph-recon", dataset="disease_lp", flow="tc")
        >>> cfg.epochs, cfg.lr, cfg.hidden, cfg.latent_dim
        (3000, 0.001, 16, None)
        >>> RunConfig.from_json(cfg.to_json()) == cfg
        True
    """

    command: str
    # what is trained, on what (the run-defining settings)
    dataset: str
    model: str = "hyperbolic"
    flow: str = "whc"
    latent_dim: Optional[int] = None  # None: the dataset's default (graph-recon), resolved by run_command
    epochs: int = 1
    lr: float = 1e-3
    hidden: Optional[int] = None  # None: the dataset's default (density)
    flow_layers: int = 2
    flow_hidden: int = 128
    flow_conditioner: str = "mlp"  # graph-recon: coupling networks "mlp" | "gcn" | "gat"
    kl_weight: float = 1.0  # graph-recon: β of recon + β·KL/N (1: the paper's)
    weight_decay: float = 0.0  # graph-recon: λ of Adam's decoupled weight decay (AdamW; 0: plain Adam, the paper's)
    decoder: str = "inner"  # graph-recon: edge decoder "inner" (the paper's Table 3) | "distance" (Fermi–Dirac)
    final_radius: float = 2.0  # graph-recon: curvature radius R after the warm-up R = 11 → R (k = R²; 2: the paper's)
    hierarchy_sources: Optional[int] = None  # graph-recon: source nodes of the hierarchy metrics (None: vae's rule)
    batch_size: Optional[int] = None  # density (None: the dataset's default), graph-gen
    iwae_samples: int = 500  # density
    eval_batch: int = 100  # density
    num_generate: int = 100  # graph-gen
    node_input: str = "structural"  # graph-gen: encoder input "structural" | "adjacency" | "both" (vae.constants)
    schedule: str = "paper"  # graph-gen: "paper" (E + E epochs at lr, k = 1) | "reference" (E/2 at lr, E at lr/10, k = 4)
    sampler: str = "bernoulli"  # graph-gen: edges "bernoulli" (the paper's) | "spanning-tree" | "max-spanning-tree"
    embedding_manifold: str = "poincare"  # graph-recon --model embedding: "poincare" | "lorentz" (its points' manifold)
    negatives: int = EMBEDDING_NEGATIVES  # graph-recon --model embedding: K negatives per edge of the ranking loss
    seed: int = 0
    seeds: int = 1
    # how it runs (speed and output only)
    device: str = "cpu"
    threads: int = 1
    compile: bool = False
    cuda_graph: str = "auto"  # graph-recon on CUDA: "auto" (= on) | "on" | "off"
    data_root: Optional[Path] = None
    out: Optional[Path] = None  # None: runs/<command>/<dataset>-<model>-<flow>-d<latent_dim>, set by run_command
    csv: Optional[Path] = None  # None: <out>/../results.csv
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: Optional[int] = None  # None: 1/20 of the epochs
    no_progress: bool = False
    no_verify_data: bool = False  # load shared data files whose sha256 differs (a user's own modified copies)
    stop_after: Optional[int] = None  # tests: stop as if killed after this many epochs

    run_defining: ClassVar[tuple[str, ...]] = RUN_DEFINING

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f"unknown command {self.command!r}; one of {', '.join(COMMANDS)}")
        for name, allowed in (("node_input", NODE_INPUTS), ("schedule", SCHEDULES), ("sampler", SAMPLERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r} (command "
                                 f"line: --{name.replace('_', '-')} {'|'.join(allowed)})")
        if self.cuda_graph not in ("auto", "on", "off"):
            raise ValueError(f"cuda_graph must be 'auto', 'on' or 'off'; got {self.cuda_graph!r}")
        self._check_embedding()
        for name in _PATHS:  # accept str paths (JSON, callers) and store Path
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def _check_embedding(self) -> None:
        """Refuse, in one line, a setting that means nothing for the model: a VAE's with ``--model embedding``
        (:data:`VAE_ONLY`), an embedding's with a VAE (:data:`EMBEDDING_ONLY`)."""
        if self.embedding_manifold not in EMBEDDING_MANIFOLDS:
            raise ValueError(f"embedding_manifold must be one of {', '.join(EMBEDDING_MANIFOLDS)}; got "
                             f"{self.embedding_manifold!r} (command line: --embedding-manifold poincare|lorentz)")
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1; got {self.negatives} (command line: --negatives K)")
        defaults = RunConfig.defaults(self.command, self.model)
        flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
        if self.model != EMBEDDING:
            changed = [flag(n) for n in EMBEDDING_ONLY if getattr(self, n) != defaults[n]]
            if changed:
                raise ValueError(f"{', '.join(changed)} only apply to --model embedding (got --model {self.model}); "
                                 "leave them out")
            return
        if self.command != "graph-recon":
            raise ValueError(f"--model embedding is a graph-recon model (node embeddings of one graph), not a "
                             f"{self.command} model; use --model euclidean|hyperbolic|poincare|spherical")
        for name, why in VAE_ONLY.items():
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{flag(name)} {getattr(self, name)} does not apply to --model embedding: {why}; "
                                 "leave it out")
        if self.cuda_graph == "on":
            raise ValueError("--cuda-graph on does not apply to --model embedding: geoopt's RiemannianAdam counts "
                             "its steps on the host, which a CUDA graph would freeze; leave it out")

    @classmethod
    def defaults(cls, command: str, model: str | None = None) -> dict[str, Any]:
        """Every setting's default for ``command`` (what the command line shows), and for ``model`` where given
        (:data:`MODEL_DEFAULTS`)."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        base = {f.name: f.default for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
        return {**base, **COMMAND_DEFAULTS[command], **MODEL_DEFAULTS.get(model or "", {})}

    @classmethod
    def for_command(cls, command: str, **settings: Any) -> "RunConfig":
        """The config of ``command`` with its defaults (those of ``settings["model"]`` included:
        :data:`MODEL_DEFAULTS`) and ``settings`` (an unknown setting is a ``TypeError``)."""
        if command not in COMMAND_DEFAULTS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        return cls(command=command, **{**COMMAND_DEFAULTS[command], **MODEL_DEFAULTS.get(settings.get("model", ""), {}),
                                       **settings})

    @classmethod
    def from_args(cls, args: Any) -> "RunConfig":
        """The config of a parsed command line (an ``argparse.Namespace`` whose names are the settings')."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether the training step is captured in a CUDA graph (graph-recon on a CUDA device, unless ``off`` or
        ``--model embedding``, whose RiemannianAdam keeps its step count on the host)."""
        return (self.command == "graph-recon" and str(self.device).startswith("cuda") and self.cuda_graph != "off"
                and self.model != EMBEDDING)

    def defining(self) -> dict[str, Any]:
        """The :data:`RUN_DEFINING` settings, as stored."""
        return {name: getattr(self, name) for name in RUN_DEFINING}

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        """The config stored by :meth:`to_json`, or by an older version: keys this version does not know (the data
        note and ``extra`` that older files kept here; :class:`~experiments.run.result.RunResult` reads the note)
        are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        if isinstance(known.get("cuda_graph"), bool):  # written as the resolved flag before RunConfig
            known["cuda_graph"] = "auto" if known["cuda_graph"] else "off"
        return cls(**known)
