"""Dataset loaders of the experiments, reading the folder layout of ``shared/data`` under a data root.

Layout expected under ``root`` (see ``shared/data/README.md`` for origin, licence and checksums)::

    hyperbolics_edges/{bio-diseasome,ca-CSphd,phylo_tree}.edges   Dis-I, CS-PhD, phylogenetics
    hgcn/disease_lp/disease_lp.{edges.csv,feats.npz,labels.npy}  Dis-II
    hgcn/airport/airport.p                                       airport
    wordnet_mammals/mammal_closure.csv                           WordNet mammals
    planetoid/{Cora,CiteSeer}/raw/ind.*                          Cora, CiteSeer (else torch-geometric downloads)
    mnist_t10k/t10k-{images-idx3,labels-idx1}-ubyte.gz           MNIST (test split only; 8k train / 2k test)

Generated sets need no files: ``bdp`` (branching diffusion process), ``digits`` (scikit-learn's bundled 8×8
digits), ``tree`` (a hierarchical graph with diffused features), ``trees`` and ``lobsters``. Nothing is ever
written under ``root``: Planetoid is copied to a temporary folder first, because torch-geometric writes a
``processed/`` folder next to ``raw/``.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import functools
import gzip
import hashlib
import os
import pickle
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch

from experiments.constants import DATA_SHA256

Tensor = torch.Tensor

DATA_ROOT_ENV = "RF_DATA_ROOT"

DENSITY_DATASETS = ("bdp", "mnist", "digits")
GRAPH_DATASETS = ("dis-i", "dis-ii", "cora", "citeseer", "csphd", "phylo", "mammals", "airport", "tree", "taxonomy",
                  "taxonomy-3")
GENERATION_DATASETS = ("trees", "lobsters")

#: one line per dataset, used by ``--help``
DESCRIPTIONS: dict[str, str] = {
    "bdp": "branching diffusion process (Mathieu et al. 2019): depth-5 binary tree in 50-d, 5 noisy children "
           "per node, 315 samples, 70/30 split (generated, seeded)",
    "mnist": "MNIST, dynamically binarised; only the 10k test images exist offline: first 8k train, last 2k test",
    "digits": "scikit-learn's 8x8 digits (1,797 images, bundled), dynamically binarised, 80/20 split",
    "dis-i": "human disease network (516 nodes, 1,188 edges), identity features, latent dim 6",
    "dis-ii": "HGCN's SIR disease-spreading tree (2,665 nodes), 11 features, latent dim 2",
    "cora": "Cora citation graph (Planetoid), bag-of-words features",
    "citeseer": "CiteSeer citation graph (Planetoid), bag-of-words features",
    "csphd": "CS PhD advisor-advisee network (1,025 nodes), identity features",
    "phylo": "phylogenetic tree (344 nodes), identity features",
    "mammals": "WordNet mammal hypernym closure (1,180 nodes, 6,540 edges), identity features",
    "airport": "OpenFlights airport graph from HGCN (3,188 nodes), 5 features",
    "tree": "generated hierarchical graph, no download: a balanced 3-ary tree of depth 5 (364 nodes) whose "
            "16-d node features diffuse from parent to child",
    "taxonomy": "generated is-a hierarchy, no download: the transitive closure of a balanced 3-ary tree of depth 5 "
                "(364 nodes, 1,641 ancestor-descendant edges, like WordNet's mammal closure), identity features",
    "taxonomy-3": "generated is-a hierarchy, no download (the main job's graph): the same tree with every node linked "
                  "to its ancestors up to 3 levels up (364 nodes, 1,074 edges; no root-to-all links), identity features",
    "trees": "100 random labelled trees with 20-99 nodes (networkx); first 80 train, last 20 test",
    "lobsters": "100 networkx random lobsters (80, 0.7, 0.7) kept when 20 <= |V| <= 100; first 80 train, last 20 test",
}

_SOURCES = {
    "hyperbolics_edges": "https://github.com/HazyResearch/hyperbolics/tree/master/data/edges",
    "hgcn/disease_lp": "https://github.com/HazyResearch/hgcn/tree/master/data/disease_lp",
    "hgcn/airport": "https://github.com/HazyResearch/hgcn/tree/master/data/airport",
    "wordnet_mammals": "https://github.com/facebookresearch/poincare-embeddings (wordnet/mammal_closure.csv, "
                       "made by its `make` from WordNet)",
    "mnist_t10k": "http://yann.lecun.com/exdb/mnist/ (or https://ossci-datasets.s3.amazonaws.com/mnist/)",
}


class MissingDataError(FileNotFoundError):
    """A dataset file is not under the data root; the message names the file and where to get it."""


class DataFileError(ValueError):
    """A dataset file is there but damaged (truncated, unreadable, or not the graph it should be); the message names
    the file, what was found and where to get a fresh copy."""


#: the shape of each offline graph, checked at every load (a truncated or foreign file fails here, not later):
#: nodes, undirected edges (no self-loops), feature columns (``None``: identity features)
GRAPH_SHAPES: dict[str, tuple[int, int, int | None]] = {
    "dis-i": (516, 1188, None), "dis-ii": (2665, 2664, 11), "phylo": (344, 343, None), "csphd": (1025, 1043, None),
    "airport": (3188, 18630, 5), "mammals": (1180, 6540, None), "cora": (2708, 5278, 1433),
    "citeseer": (3327, 4552, 3703),
}
#: where each offline graph's files live under the data root (for the messages)
GRAPH_FILES: dict[str, tuple[str, ...]] = {
    "dis-i": ("hyperbolics_edges/bio-diseasome.edges",), "csphd": ("hyperbolics_edges/ca-CSphd.edges",),
    "phylo": ("hyperbolics_edges/phylo_tree.edges",),
    "dis-ii": ("hgcn/disease_lp/disease_lp.edges.csv", "hgcn/disease_lp/disease_lp.feats.npz",
               "hgcn/disease_lp/disease_lp.labels.npy"),
    "airport": ("hgcn/airport/airport.p",), "mammals": ("wordnet_mammals/mammal_closure.csv",),
    "cora": ("planetoid/Cora/raw/",), "citeseer": ("planetoid/CiteSeer/raw/",),
}


def _damaged(name: str, root: Path | None, found: str) -> DataFileError:
    files = ", ".join(str(Path(root if root is not None else default_data_root()) / f) for f in GRAPH_FILES[name])
    folder = GRAPH_FILES[name][0].split("/")[0]
    folder = "/".join(GRAPH_FILES[name][0].split("/")[:2]) if folder == "hgcn" else folder
    return DataFileError(
        f"dataset {name!r}: {found} in {files}; the file is damaged or not the right one. Replace it with a fresh "
        f"copy from {_SOURCES.get(folder, 'the source named in shared/data/README.md')} (or point --data-root at a "
        "good copy of shared/data)")


def _check_graph(name: str, root: Path | None, g: "GraphData") -> "GraphData":
    """Raise :class:`DataFileError` unless ``g`` has the shape in :data:`GRAPH_SHAPES` (and labels per node)."""
    nodes, edges, feats = GRAPH_SHAPES[name]
    got_edges = int((g.edge_index[0] < g.edge_index[1]).sum()) if g.edge_index.numel() else 0
    got_feats = None if g.x is None else g.x.size(1)
    problems = []
    if (g.num_nodes, got_edges) != (nodes, edges):
        problems.append(f"{g.num_nodes} nodes and {got_edges} edges instead of {nodes} and {edges}")
    if got_feats != feats or (g.x is not None and g.x.size(0) != g.num_nodes):
        problems.append(f"features of shape {None if g.x is None else tuple(g.x.shape)} instead of "
                        f"{None if feats is None else (nodes, feats)}")
    if g.labels is not None and len(g.labels) != g.num_nodes:
        problems.append(f"{len(g.labels)} labels for {g.num_nodes} nodes")
    if problems:
        raise _damaged(name, root, "; ".join(problems))
    return g


def default_data_root() -> Path:
    """``$RF_DATA_ROOT`` if set, else ``../shared/data`` beside the repository, else ``./data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return beside if beside.is_dir() else Path("data")


#: whether the loaders check each shared file's sha256 (:func:`verified`; off under ``--no-verify-data``)
_VERIFY: contextvars.ContextVar[bool] = contextvars.ContextVar("verify_data", default=True)


@contextlib.contextmanager
def verified(on: bool):
    """Within the block the loaders check (``on``) or skip the sha256 of each shared data file."""
    token = _VERIFY.set(on)
    try:
        yield
    finally:
        _VERIFY.reset(token)


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, rel: str) -> None:
    """Raise a one-line :class:`DataFileError` if ``path`` (the shared file ``rel``) differs from the sha256 of
    :data:`~experiments.constants.DATA_SHA256` (a file not in the table, or with checks off, passes).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "phylo_tree.edges"
        >>> _ = p.write_text("0 1")
        >>> check_sha256(p, "hyperbolics_edges/phylo_tree.edges")
        Traceback (most recent call last):
        ...
        experiments.datasets.DataFileError: .../phylo_tree.edges is not the shared file hyperbolics_edges/phylo_tree.edges: ...
    """
    want = DATA_SHA256.get(rel)
    if want is None or not _VERIFY.get():
        return
    got = sha256_of(path)
    if got != want:
        raise DataFileError(f"{path} is not the shared file {rel}: sha256 {got[:12]}… instead of {want[:12]}… "
                            "(damaged or edited); restore it from shared/data, or pass --no-verify-data to load "
                            "your own modified copy")


def _need(root: Path | None, rel: str, dataset: str) -> Path:
    if root is None:
        root = default_data_root()
    path = Path(root) / rel
    if not path.is_file():
        folder = rel.split("/")[0] if not rel.startswith("hgcn") else "/".join(rel.split("/")[:2])
        raise MissingDataError(
            f"dataset {dataset!r} needs the file {path} (expected at <data-root>/{rel}), which does not exist. "
            f"Get it from {_SOURCES.get(folder, 'the source named in shared/data/README.md')} and put it there, "
            f"or pass --data-root DIR (or set ${DATA_ROOT_ENV}) pointing at a copy of shared/data."
        )
    check_sha256(path, rel)
    return path


# ----------------------------------------------------------------------------------------------------------
# graph reconstruction
# ----------------------------------------------------------------------------------------------------------

#: label names of :class:`GraphData` that are depths in a hierarchy
DEPTH_LABELS = ("depth", "hops from the hub")


@dataclass
class GraphData:
    """One graph for link prediction. ``x is None`` means identity (one-hot) node features."""

    name: str
    edge_index: Tensor
    num_nodes: int
    x: Tensor | None
    labels: np.ndarray | None = None  # colours of the latent plot (depth or class)
    label_name: str = "label"
    latent_dim: int = 2

    @property
    def depths(self) -> np.ndarray | None:
        """Each node's depth in the hierarchy where the graph has one (``labels`` named ``depth``, or hops from the
        hub of a tree-like graph), else None: what :func:`vae.hierarchy.depth_spearman` compares with radii."""
        return self.labels if self.label_name in DEPTH_LABELS and self.labels is not None else None

    def summary(self) -> str:
        e = int((self.edge_index[0] < self.edge_index[1]).sum()) if self.edge_index.numel() else 0
        feats = "identity" if self.x is None else str(self.x.size(1))
        return f"{self.name}: {self.num_nodes} nodes, {e} undirected edges, features {feats}"


def _undirected(edges: list[tuple[int, int]] | np.ndarray) -> Tensor:
    e = torch.as_tensor(np.asarray(edges), dtype=torch.long).reshape(-1, 2).T
    e = e[:, e[0] != e[1]]
    e = torch.cat([e, e.flip(0)], 1)
    return torch.unique(e, dim=1)


def _from_networkx(g: nx.Graph) -> tuple[Tensor, dict]:
    index = {v: i for i, v in enumerate(g.nodes())}
    return _undirected([(index[u], index[v]) for u, v in g.edges()]), index


def _bfs_depth(g: nx.Graph, root) -> np.ndarray:
    depth = nx.single_source_shortest_path_length(g, root)
    return np.array([depth.get(v, -1) for v in g.nodes()])


def hierarchical_graph(branching: int = 3, depth: int = 5, features: int = 16, noise: float = 1.0,
                       seed: int = 0) -> GraphData:
    """The embedded default (``tree``): a balanced tree whose node features diffuse from parent to child,
    ``x_child = x_parent + noise·ε`` (a branching diffusion on a graph, like Dis-II's SIR features), so held-out
    edges are predictable from features as well as from the surviving structure."""
    g = nx.balanced_tree(branching, depth)
    rng = np.random.default_rng(seed)
    x = np.zeros((g.number_of_nodes(), features))
    for parent, child in nx.bfs_edges(g, 0):
        x[child] = x[parent] + noise * rng.standard_normal(features)
    x = (x - x.mean(0)) / x.std(0)
    ei, _ = _from_networkx(g)
    return GraphData("tree", ei, g.number_of_nodes(), torch.tensor(x, dtype=torch.float32), _bfs_depth(g, 0),
                     "depth", 2)


def taxonomy_graph(branching: int = 3, depth: int = 5, max_hops: int | None = None) -> GraphData:
    """The embedded is-a hierarchies (``taxonomy``, ``taxonomy-3``): every node of a balanced ``branching``-ary tree
    of ``depth`` levels linked to its ancestors, all of them (``max_hops=None``: the transitive closure, as in
    WordNet's noun closure that Poincaré embeddings are judged on) or those at most ``max_hops`` levels up;
    identity features, node depths as labels. A held-out edge is predictable from the others (a node's other
    ancestors and descendants), and the number of nodes grows exponentially with depth: the case hyperbolic
    latents are for.

    In the closure the root is linked to every node, so a distance decoder must keep every latent within its
    radius of the root's: the deep levels crowd at that radius and share it (depth–radius Spearman ≈ 0.5 on the
    main job's models). With links up to 3 levels up, nothing pins the leaves to the root, and the radius grows
    with depth (≈ 0.65 over 5 seeds); ``taxonomy-3`` is the main job's graph for that reason.

    Example:
        >>> g = taxonomy_graph(2, 2)  # root 0; children 1, 2; grandchildren 3-6
        >>> g.num_nodes, g.edge_index.size(1) // 2, g.labels.tolist()
        (7, 10, [0, 1, 1, 2, 2, 2, 2])
        >>> taxonomy_graph(2, 2, max_hops=1).edge_index.size(1) // 2  # the tree itself
        6
    """
    if max_hops is not None and max_hops < 1:
        raise ValueError(f"max_hops must be a positive number of levels (or None: every ancestor); got {max_hops}")
    g = nx.balanced_tree(branching, depth)
    parent = {child: p for p, child in nx.bfs_edges(g, 0)}
    edges = []
    for v in g.nodes():
        a, hops = v, 0
        while a in parent and (max_hops is None or hops < max_hops):
            a, hops = parent[a], hops + 1
            edges.append((a, v))
    ei = _undirected(edges)
    name = "taxonomy" if max_hops is None else f"taxonomy-{max_hops}"
    return GraphData(name, ei, g.number_of_nodes(), None, _bfs_depth(g, 0), "depth", 2)


def _edge_file(root, rel, name, latent_dim) -> GraphData:
    g = nx.read_edgelist(_need(root, rel, name), nodetype=int)
    ei, _ = _from_networkx(g)
    centre = max(g.degree, key=lambda t: t[1])[0]
    return GraphData(name, ei, g.number_of_nodes(), None, _bfs_depth(g, centre), "hops from the hub", latent_dim)


def _disease_lp(root) -> GraphData:

    edges_path, feats, labels = (_need(root, rel, "dis-ii") for rel in GRAPH_FILES["dis-ii"])
    idx: dict[str, int] = {}
    edges = []
    for line in open(edges_path):  # HGCN's convention: nodes renumbered in order of first appearance
        a, b = line.rstrip().split(",")
        for n in (a, b):
            idx.setdefault(n, len(idx))
        edges.append((idx[a], idx[b]))
    x = torch.tensor(sp.load_npz(feats).toarray(), dtype=torch.float32)
    return GraphData("dis-ii", _undirected(edges), len(idx), x, np.load(labels), "label", 2)


def _airport(root) -> GraphData:
    path = _need(root, "hgcn/airport/airport.p", "airport")
    with open(path, "rb") as f:
        g = pickle.load(f)
    ei, _ = _from_networkx(g)
    x = torch.tensor(np.array([g.nodes[u]["feat"] for u in g.nodes()]), dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-6)
    return GraphData("airport", ei, g.number_of_nodes(), x, None, "label", 16)


def _mammals(root) -> GraphData:

    path = _need(root, "wordnet_mammals/mammal_closure.csv", "mammals")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    g = nx.DiGraph([(r["id1"], r["id2"]) for r in rows if r["id1"] != r["id2"]])
    depth = np.array([g.out_degree(v) for v in g.nodes()])  # ancestors in the closure = depth below mammal.n.01
    ei, _ = _from_networkx(g.to_undirected())
    return GraphData("mammals", ei, g.number_of_nodes(), None, depth, "depth", 2)


def _planetoid(root, name: str) -> GraphData:
    from torch_geometric.datasets import Planetoid  # lazy: import cost (~6 s measured)

    pyg_name = {"cora": "Cora", "citeseer": "CiteSeer"}[name]
    src = Path(root if root is not None else default_data_root()) / "planetoid" / pyg_name / "raw"
    tmp = Path(tempfile.mkdtemp(prefix="rf-planetoid-"))
    try:
        if src.is_dir():
            for f in src.iterdir():
                check_sha256(f, f"planetoid/{pyg_name}/raw/{f.name}")
            shutil.copytree(src, tmp / pyg_name / "raw")  # PyG writes processed/ beside raw/: never into root
        try:
            ds = Planetoid(root=str(tmp), name=pyg_name)
        except Exception as err:  # offline and no local copy
            raise MissingDataError(
                f"dataset {name!r} needs the Planetoid raw files <data-root>/planetoid/{pyg_name}/raw/"
                f"ind.{name}.{{x,tx,allx,y,ty,ally,graph,test.index}} (looked in {src}); torch-geometric's downloader "
                f"(https://github.com/kimiyoung/planetoid) also failed: {err}"
            ) from err
        data = ds[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GraphData(name, data.edge_index, data.num_nodes, data.x.float(), data.y.numpy(), "class", 16)


def load_graph(name: str, root: Path | str | None = None, *, verify: bool = True) -> GraphData:
    """A graph-reconstruction dataset by name (see :data:`GRAPH_DATASETS`). An offline graph's files are checked
    against their sha256 (:data:`~experiments.constants.DATA_SHA256`; ``verify=False`` skips that, for a user's own
    modified copy) and the graph against :data:`GRAPH_SHAPES`; a file that cannot be read, differs or gives another
    graph is a :class:`DataFileError` naming it."""
    with verified(verify):
        return _load_graph(name, Path(root) if root is not None else None)


def _load_graph(name: str, root: Path | None) -> GraphData:
    if name == "tree":
        return hierarchical_graph()
    if name == "taxonomy":
        return taxonomy_graph()
    if name == "taxonomy-3":
        return taxonomy_graph(max_hops=3)
    if name not in GRAPH_SHAPES:
        raise ValueError(f"unknown graph dataset {name!r}; choose one of {', '.join(GRAPH_DATASETS)}")
    try:
        g = _load_offline_graph(name, root)
    except (MissingDataError, DataFileError):
        raise
    except Exception as err:  # a truncated or foreign file: parse errors of every kind, named by the file
        raise _damaged(name, root, f"reading failed ({type(err).__name__}: {err})") from err
    return _check_graph(name, root, g)


def _load_offline_graph(name: str, root: Path | None) -> GraphData:
    if name in ("dis-i", "csphd", "phylo"):
        return _edge_file(root, GRAPH_FILES[name][0], name, 2 if name == "phylo" else 6)
    if name == "dis-ii":
        return _disease_lp(root)
    if name == "airport":
        return _airport(root)
    if name == "mammals":
        return _mammals(root)
    if name in ("cora", "citeseer"):
        return _planetoid(root, name)
    raise ValueError(f"unknown graph dataset {name!r}; choose one of {', '.join(GRAPH_DATASETS)}")


# ----------------------------------------------------------------------------------------------------------
# density estimation
# ----------------------------------------------------------------------------------------------------------

@dataclass
class DensityData:
    """Train/test arrays. ``binarize``: train batches are dynamically binarised (``x ~ Bern(intensity)``), the
    test set was binarised once with a fixed seed. ``likelihood`` names the observation model."""

    name: str
    train: Tensor
    test: Tensor
    likelihood: str
    binarize: bool
    hidden: int
    batch_size: int
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def branching_diffusion(dim: int = 50, depth: int = 5, children: int = 2, siblings: int = 5,
                        sigma: float = 1.0, sibling_factor: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The BDP of Mathieu et al. 2019 (``pvae``'s ``SyntheticDataset`` with ``param=1``): a ``children``-ary
    tree of ``depth`` levels grown by Gaussian steps of *variance* ``sigma`` from the origin in ℝ^dim; every node
    emits ``siblings`` noisy copies of variance ``sigma/sibling_factor``; the copies are the data (standardised
    per feature). Returns ``(data, depth_of_each_sample)``: 63 nodes × 5 = 315 samples with the defaults."""
    rng = np.random.default_rng(seed)
    nodes, depths = [np.zeros(dim)], [0]
    frontier = [(np.zeros(dim), 0)]
    while frontier:
        node, d = frontier.pop(0)
        if d == depth:
            continue
        for _ in range(children):
            child = node + np.sqrt(sigma) * rng.standard_normal(dim)
            nodes.append(child)
            depths.append(d + 1)
            frontier.append((child, d + 1))
    data, labels = [], []
    for node, d in zip(nodes, depths):
        for _ in range(siblings):
            data.append(node + np.sqrt(sigma / sibling_factor) * rng.standard_normal(dim))
            labels.append(d)
    x = np.asarray(data)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), np.asarray(labels)


def _split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(train_fraction * n))
    return perm[:k], perm[k:]


def _fixed_binarization(x: Tensor, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain): the MNIST format (magic, dims, big-endian sizes, then uint8 data)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_density(name: str, root: Path | str | None = None, *, verify: bool = True) -> DensityData:
    """A density-estimation dataset by name (see :data:`DENSITY_DATASETS`). Splits are fixed (seed 0) so
    every model and every run seed sees the same train and test sets. A shared file is checked against its sha256
    unless ``verify`` is off (see :func:`load_graph`)."""
    with verified(verify):
        return _load_density(name, Path(root) if root is not None else None)


def _load_density(name: str, root: Path | None) -> DensityData:
    if name == "bdp":
        x, depth = branching_diffusion()
        tr, te = _split(len(x), 0.7, 0)
        t = torch.from_numpy(x)
        return DensityData("bdp", t[tr], t[te], "gaussian-unit", False, 200, 64, depth[tr], depth[te],
                           "Gaussian likelihood with unit variance on standardised features")
    if name == "mnist":
        images = read_idx(_need(root, "mnist_t10k/t10k-images-idx3-ubyte.gz", "mnist"))
        labels = read_idx(_need(root, "mnist_t10k/t10k-labels-idx1-ubyte.gz", "mnist"))
        x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
        return DensityData("mnist", x[:8000], _fixed_binarization(x[8000:], 0), "bernoulli", True, 600, 128,
                           labels[:8000], labels[8000:],
                           "reduced: only the 10k MNIST test images are available offline; the first 8,000 train, "
                           "the last 2,000 test (the paper trains on 60k and tests on 10k)")
    if name == "digits":
        from sklearn.datasets import load_digits  # lazy: import cost (~5 s measured)

        d = load_digits()
        x = torch.tensor(d.data / 16.0, dtype=torch.float32)
        tr, te = _split(len(x), 0.8, 0)
        return DensityData("digits", x[tr], _fixed_binarization(x[te], 0), "bernoulli", True, 200, 128,
                           d.target[tr], d.target[te], "scikit-learn 8x8 digits, intensities /16, 80/20 split")
    raise ValueError(f"unknown density dataset {name!r}; choose one of {', '.join(DENSITY_DATASETS)}")


# ----------------------------------------------------------------------------------------------------------
# graph generation
# ----------------------------------------------------------------------------------------------------------

def random_lobster(n: float, p1: float, p2: float, seed: int, max_nodes: int | None = None) -> nx.Graph | None:
    """``networkx.random_lobster(n, p1, p2, seed)`` drawn from the same random stream (the same graph for the
    same integer seed), but abandoned as soon as it exceeds ``max_nodes`` (then ``None``): most draws of
    ``(80, 0.7, 0.7)`` have hundreds of nodes, and building them only to reject them dominates the cost."""
    r = random.Random(seed)
    length = int(2 * r.random() * n + 0.5)
    cap = float("inf") if max_nodes is None else max_nodes
    if length > cap:
        return None
    edges = [(i, i + 1) for i in range(length - 1)]
    current = length - 1
    for b in range(length):
        while r.random() < p1:  # legs of the caterpillar
            current += 1
            edges.append((b, current))
            leg = current
            while r.random() < p2:  # and their bits
                current += 1
                edges.append((leg, current))
            if current + 1 > cap:
                return None
    g = nx.Graph()
    g.add_nodes_from(range(max(length, 0)))
    g.add_edges_from(edges)
    return g


def load_graph_set(name: str, num: int = 100, seed: int = 0) -> tuple[list[nx.Graph], list[nx.Graph], str]:
    """``(train, test, kind)``: ``num`` generated graphs, the first 80 % train and the rest test; ``kind`` is
    ``"tree"`` or ``"lobster"`` (the validity test of :func:`vae.generation_metrics`). Cached per process
    (lobsters are drawn by rejection: most draws are far larger than 100 nodes)."""
    train, test, kind = _graph_set(name, num, seed)
    return list(train), list(test), kind


@functools.lru_cache(maxsize=8)
def _graph_set(name: str, num: int, seed: int) -> tuple[tuple[nx.Graph, ...], tuple[nx.Graph, ...], str]:
    rng = random.Random(seed)
    graphs: list[nx.Graph] = []
    if name == "trees":
        for _ in range(num):
            graphs.append(nx.random_labeled_tree(rng.randint(20, 99), seed=rng.randrange(2**31)))
        kind = "tree"
    elif name == "lobsters":
        while len(graphs) < num:
            g = random_lobster(80, 0.7, 0.7, seed=rng.randrange(2**31), max_nodes=100)
            if g is not None and g.number_of_nodes() >= 20:
                graphs.append(g)
        kind = "lobster"
    else:
        raise ValueError(f"unknown graph-generation dataset {name!r}; choose one of {', '.join(GENERATION_DATASETS)}")
    cut = int(0.8 * num)
    return tuple(graphs[:cut]), tuple(graphs[cut:]), kind


# ----------------------------------------------------------------------------------------------------------
# earth events on the sphere S²
# ----------------------------------------------------------------------------------------------------------

EARTH_DATASETS = ("volcano", "earthquake", "flood", "fire")
#: dataset -> (file under ``<data-root>/earth``, number of events, sha256 of the staged file; shared/data/README.md)
EARTH_FILES: dict[str, tuple[str, int, str]] = {
    "volcano": ("volerup.csv", 827, "f7bbaf32a412f5fe82350f48e0c55100be260803969c16557343f687fd0593fc"),
    "earthquake": ("quakes_all.csv", 6120, "3e5e1a10fb2faf1899106264289334037d039f00f5265d13dad388a93d8ff2f7"),
    "flood": ("flood.csv", 4875, "ffb1e3182c3053afcdeceec4727c262a29da10255d20747c08144da5b0963486"),
    "fire": ("fire.csv", 12809, "c5c6c9490b1d8c58ba9eb78d9e2f82d1c1e62694ca5cff917c54600d3d83f459"),
}
_SOURCES["earth"] = "https://github.com/oxcsml/riemannian-score-sde (folder data/, commit b35b739)"
#: train / validation / test fractions of the earth catalogues' random splits (the published protocol)
EARTH_SPLIT = (0.8, 0.1, 0.1)


def latlon_to_xyz(latlon: Tensor) -> Tensor:
    """Degrees ``(latitude θ, longitude λ)`` -> the unit sphere S² ⊂ ℝ³, ``(cos θ cos λ, cos θ sin λ, sin θ)``
    (``z`` = north).

    Example:
        >>> latlon_to_xyz(torch.tensor([[0.0, 0.0]]))
        tensor([[1., 0., 0.]])
    """
    lat, lon = torch.deg2rad(latlon[..., 0]), torch.deg2rad(latlon[..., 1])
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)


def xyz_to_latlon(x: Tensor) -> Tensor:
    """Inverse of :func:`latlon_to_xyz`: ``θ = atan2(z, |(x, y)|)``, ``λ = atan2(y, x)`` in degrees (λ ∈ (-180, 180]).

    Example:
        >>> xyz_to_latlon(torch.tensor([[0.0, 1.0, 0.0]]))
        tensor([[ 0., 90.]])
    """
    lat = torch.atan2(x[..., 2], x[..., :2].norm(dim=-1))
    lon = torch.atan2(x[..., 1], x[..., 0])
    return torch.rad2deg(torch.stack([lat, lon], -1))


def _earth_damaged(path: Path, found: str, verify: bool) -> DataFileError:
    tail = " (or pass --no-verify-data for a copy you changed on purpose)" if verify else ""
    return DataFileError(f"{path}: {found}; the file is damaged or not the staged one. Replace it with a fresh copy "
                         f"from {_SOURCES['earth']}{tail}")


def load_earth(name: str, root: Path | str | None = None, *, verify: bool = True) -> Tensor:
    """The events of earth catalogue ``name`` (:data:`EARTH_DATASETS`) as float64 unit vectors ``(N, 3)``.

    ``root``: the data root (``<root>/earth/<file>``; default :func:`default_data_root`). ``verify``: check the
    file's sha256 and event count against :data:`EARTH_FILES` (turn it off for a copy you changed on purpose).
    Lines starting with ``#`` and a header line before the first event are skipped; any other line that is not
    ``latitude,longitude`` in range raises :class:`DataFileError` naming the line.

    Example:
        >>> x = load_earth("volcano")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([827, 3])
    """
    if name not in EARTH_FILES:
        raise ValueError(f"unknown earth dataset {name!r}; choose from {', '.join(EARTH_DATASETS)}")
    file, count, digest = EARTH_FILES[name]
    path = _need(None if root is None else Path(root), f"earth/{file}", name)
    if verify and (got := sha256_of(path)) != digest:
        raise _earth_damaged(path, f"sha256 {got[:12]}… differs from the staged file's {digest[:12]}…", verify)
    rows: list[tuple[float, float]] = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise _earth_damaged(path, f"not text ({err.reason} at byte {err.start})", verify) from None
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            lat, lon = float(parts[0]), float(parts[1])
        except ValueError:
            if not rows and not any(c.isdigit() for c in line):  # the header line
                continue
            raise _earth_damaged(path, f"line {i} is {line[:60]!r}, not 'latitude,longitude'", verify) from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 360):
            raise _earth_damaged(path, f"line {i}: latitude {lat} / longitude {lon} out of range "
                                 "([-90, 90] / [-180, 360] degrees)", verify)
        rows.append((lat, lon))
    if not rows or (verify and len(rows) != count):
        raise _earth_damaged(path, f"{len(rows)} events instead of {count}", verify)
    return latlon_to_xyz(torch.tensor(rows, dtype=torch.float64))


@dataclass(frozen=True)
class EarthSplit:
    """Train, validation and test events (unit vectors) of one seeded split."""

    train: Tensor
    val: Tensor
    test: Tensor


def split_earth(x: Tensor, seed: int) -> EarthSplit:
    """A random :data:`EARTH_SPLIT` (80/10/10) split of the events by a permutation seeded with ``seed``: train
    ``round(0.8 N)``, validation ``round(0.1 N)``, test the rest; disjoint and covering."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_tr = int(round(EARTH_SPLIT[0] * len(x)))
    n_va = int(round(EARTH_SPLIT[1] * len(x)))
    return EarthSplit(x[perm[:n_tr]], x[perm[n_tr:n_tr + n_va]], x[perm[n_tr + n_va:]])
