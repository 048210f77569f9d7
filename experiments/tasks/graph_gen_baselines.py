"""The reference rows that the graph-gen report prints beside the generators (Table 4 / Figure 5): what an
edge-count-only generator, the data itself and uniformly random trees score on the library's metrics
(:func:`vae.generation_metrics`). Experiment-only, so it lives here rather than in :mod:`vae.graph_metrics`."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from vae import generation_metrics
from vae.graph_metrics import edge_density, erdos_renyi_graphs


def baseline_rows(train: Sequence[nx.Graph], test: Sequence[nx.Graph], kind: str = "tree", seed: int = 0,
                  num: int | None = None) -> dict[str, dict[str, float]]:
    r"""The two reference rows of Table 4 / Figure 5, scored by :func:`generation_metrics` against ``test``:

    * ``"erdos_renyi"``: ``num`` G(n, p) graphs (default ``len(test)``; node counts cycle through the held-out
      graphs' sizes) with the pooled true edge density ``p`` of the training graphs (:func:`edge_density`); a
      generator that does not beat this row on every MMD has learnt no more than the edge count. ``p`` is
      returned as ``edge_density``.
    * ``"training"``: the held-out graphs scored against the training graphs, i.e. the MMDs between two samples
      of the data distribution itself: the floor a perfect generator would reach at these sample sizes.
    * ``"random_tree"``: ``num`` uniformly random labelled trees of the same sizes (the spanning-tree samplers'
      output with constant edge odds): what the ``spanning-tree`` sampler scores with no learnt structure. On
      the ``trees`` data set this *is* the data distribution, so it sits at the floor there.

    Pass ``num`` = the number of generated graphs so that the biased MMD estimates have the same
    small-sample bias as the generator's row.

    Example:
        >>> train = [nx.random_labeled_tree(30, seed=s) for s in range(8)]
        >>> test = [nx.random_labeled_tree(30, seed=10 + s) for s in range(4)]
        >>> rows = baseline_rows(train, test, "tree", seed=0)
        >>> round(rows["erdos_renyi"]["edge_density"], 4), rows["training"]["accuracy"]  # 29 / 435
        (0.0667, 100.0)
    """
    if not train or not test:
        raise ValueError("baseline_rows needs non-empty lists of training and held-out graphs")
    p = edge_density(train)
    num = len(test) if num is None else num
    if num < 1:
        raise ValueError(f"num must be a positive number of Erdős–Rényi graphs; got {num}")
    sizes = [test[i % len(test)].number_of_nodes() for i in range(num)]
    er = generation_metrics(erdos_renyi_graphs(sizes, p, seed), test, kind)
    rng = np.random.default_rng(seed)
    trees = [nx.random_labeled_tree(n, seed=int(rng.integers(2**31))) for n in sizes]
    return {"erdos_renyi": {**er, "edge_density": p}, "training": generation_metrics(list(test), list(train), kind),
            "random_tree": generation_metrics(trees, test, kind)}
