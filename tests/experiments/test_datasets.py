"""Dataset loaders: generated sets always; the offline copies of shared/data through the `data_root` fixture."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from experiments import datasets as ds
from vae import is_lobster


def test_bdp_has_the_papers_shape() -> None:
    x, depth = ds.branching_diffusion()
    assert x.shape == (315, 50) and np.allclose(x.mean(0), 0, atol=1e-5)
    assert sorted(set(depth.tolist())) == [0, 1, 2, 3, 4, 5]
    d = ds.load_density("bdp")
    assert d.train.shape == (220, 50) and d.test.shape == (95, 50)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_random_lobster_is_networkx_random_lobster(seed: int) -> None:
    lobster = getattr(nx, "random_lobster_graph", None) or nx.random_lobster
    ours, ref = ds.random_lobster(80, 0.7, 0.7, seed), lobster(80, 0.7, 0.7, seed=seed)
    assert sorted(ours.edges()) == sorted(ref.edges()) and ours.number_of_nodes() == ref.number_of_nodes()


def test_generated_graph_sets() -> None:
    train, test, kind = ds.load_graph_set("trees")
    assert (len(train), len(test), kind) == (80, 20, "tree")
    assert all(nx.is_tree(g) and 20 <= g.number_of_nodes() <= 99 for g in train + test)
    train, test, kind = ds.load_graph_set("lobsters")
    assert all(is_lobster(g) and 20 <= g.number_of_nodes() <= 100 for g in train + test)
    g = ds.load_graph("tree")
    assert g.num_nodes == 364 and g.edge_index.size(1) == 2 * 363 and g.x.shape == (364, 16)
    t = ds.load_graph("taxonomy")  # the closure of the same tree: every node linked to each of its ancestors
    assert t.num_nodes == 364 and t.x is None and t.label_name == "depth"
    assert t.edge_index.size(1) == 2 * sum(int(d) for d in t.labels)  # a node at depth d has d ancestors
    assert (t.depths == g.labels).all()
    edges = set(map(tuple, t.edge_index.T.tolist()))
    assert all((0, v) in edges for v in range(1, 364))  # the root is everyone's ancestor
    t3 = ds.load_graph("taxonomy-3")  # the same tree, each node linked to its ancestors up to 3 levels up
    assert t3.num_nodes == 364 and (t3.depths == g.labels).all() and t3.name == "taxonomy-3"
    assert t3.edge_index.size(1) == 2 * sum(min(int(d), 3) for d in t3.labels)
    e3 = set(map(tuple, t3.edge_index.T.tolist()))
    assert e3 < edges and (0, 3 * 3 + 1) in e3 and (0, 3 ** 3 + 3 ** 2 + 3 + 1) not in e3  # depth 2 in, depth 4 out
    with pytest.raises(ValueError, match="max_hops"):
        ds.taxonomy_graph(max_hops=0)


@pytest.mark.parametrize("name,nodes,edges,features", [
    ("dis-i", 516, 1188, None), ("dis-ii", 2665, 2664, 11), ("phylo", 344, 343, None), ("csphd", 1025, 1043, None),
    ("airport", 3188, 18631 - 1, 5), ("mammals", 1180, 6540, None), ("cora", 2708, 5278, 1433),
])
def test_graph_loaders_read_the_shared_layout(data_root: Path, name, nodes, edges, features) -> None:
    before = sorted(p.name for p in (data_root / "planetoid" / "Cora").iterdir()) if name == "cora" else None
    g = ds.load_graph(name, data_root)
    assert g.num_nodes == nodes
    assert int((g.edge_index[0] < g.edge_index[1]).sum()) == edges  # undirected, no self-loops
    assert (g.x is None) == (features is None) and (features is None or g.x.size(1) == features)
    if name == "cora":  # nothing written next to raw/
        assert sorted(p.name for p in (data_root / "planetoid" / "Cora").iterdir()) == before


def test_mnist_is_reduced_to_8k_2k(data_root: Path) -> None:
    d = ds.load_density("mnist", data_root)
    assert d.train.shape == (8000, 784) and d.test.shape == (2000, 784)
    assert set(d.test.unique().tolist()) == {0.0, 1.0} and "8,000" in d.note


def test_damaged_offline_files_are_clear_errors_naming_the_file(data_root: Path, tmp_path: Path, capsys) -> None:
    """A truncated edge list (Dis-I cut to half: it used to train silently on 320 nodes), a truncated pickle and a
    truncated feature file each give a one-line error naming the file and where to get a fresh copy."""
    import shutil

    from experiments.cli import main

    root = tmp_path / "data"
    for rel in ("hyperbolics_edges/bio-diseasome.edges", "hgcn/airport/airport.p",
                "hgcn/disease_lp/disease_lp.edges.csv", "hgcn/disease_lp/disease_lp.feats.npz",
                "hgcn/disease_lp/disease_lp.labels.npy"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_root / rel, root / rel)
    edges = root / "hyperbolics_edges/bio-diseasome.edges"
    lines = edges.read_text().splitlines()
    edges.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    pickled = root / "hgcn/airport/airport.p"
    pickled.write_bytes(pickled.read_bytes()[:1000])
    feats = root / "hgcn/disease_lp/disease_lp.feats.npz"
    feats.write_bytes(feats.read_bytes()[:200])
    for name, path in (("dis-i", edges), ("airport", pickled), ("dis-ii", feats)):
        with pytest.raises(ds.DataFileError) as info:  # the sha256 check names the file first
            ds.load_graph(name, root)
        assert str(path) in str(info.value) and "sha256" in str(info.value)
        with pytest.raises(ds.DataFileError) as info:  # without it, the shape and parse checks still do
            ds.load_graph(name, root, verify=False)
        assert str(path) in str(info.value) and "fresh copy" in str(info.value)
    assert main(["graph-recon", "--dataset", "dis-i", "--data-root", str(root), "--out", str(tmp_path / "o"),
                 "--no-progress", "--no-verify-data"]) == 2
    err = capsys.readouterr().err
    assert "516 and 1188" in err and "Traceback" not in err
