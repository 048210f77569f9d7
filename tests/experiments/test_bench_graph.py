"""The profiling helpers (host reads, launches, peak memory) and ``python -m experiments.bench graph``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.bench import flows as bench
from experiments.cli import bench_main
from experiments.bench import graph as bench_graph
from experiments.run.profiling import HostReadCounter, count_kernel_launches, peak_memory


def test_host_read_counter_counts_each_read_exactly() -> None:
    t = torch.tensor([1.0, -2.0, 3.0])
    with HostReadCounter() as reads:
        t.sum().item()
        bool(t[0] > 0)
        t.tolist()
    assert reads.count == 3
    names = sorted(key.split(" at ")[0] for key in reads.where)
    assert names == ["Tensor.__bool__", "Tensor.item", "Tensor.tolist"]
    # the location is this file's line, not a frame inside torch
    assert all(Path(key.split(" at ")[1].rsplit(":", 1)[0]).name == Path(__file__).name for key in reads.where)
    assert sum(reads.where.values()) == 3


def test_host_read_counter_other_reads_and_locations() -> None:
    t = torch.tensor([2.0, 3.0])
    with HostReadCounter() as reads:
        for _ in range(2):
            float(t[0])  # the same line twice: one site, counted twice
        int(t[1])
        np.asarray(t)
        t.numpy()
        [0, 1, 2][t[0].long()]  # a tensor as a list index: __index__
    assert reads.count == 6
    assert max(reads.where.values()) == 2


def test_host_read_counter_ignores_pure_tensor_ops() -> None:
    x = torch.randn(8, 4, requires_grad=True)
    lin = torch.nn.Linear(4, 3)
    with HostReadCounter() as reads:
        y = torch.tanh(lin(x)).pow(2).sum()
        y.backward()
        z = x.detach()[x.detach() > 0]  # data-dependent shape: not a value read
        _ = (z.shape, x.device, x.dtype, x.size(0), len(x))
        _ = x.cpu().to("cpu")  # a CPU tensor to the CPU: no copy
    assert reads.count == 0 and not reads.where


def test_count_kernel_launches_on_cpu_counts_top_level_aten_ops() -> None:
    a, b = torch.ones(5), torch.full((5,), 2.0)
    assert count_kernel_launches(lambda: (a + b) * a - b, "cpu") == 3
    # aten::linear counts once (not with the addmm/t inside it); the step with backward counts more
    lin = torch.nn.Linear(5, 2)
    assert count_kernel_launches(lambda: lin(a), "cpu") == 1
    assert count_kernel_launches(lambda: lin(a).sum().backward(), "cpu") > 3


def test_peak_memory_on_cpu_is_a_byte_count() -> None:
    assert peak_memory(lambda: torch.ones(256, 256).sum(), "cpu") >= 0


@pytest.mark.parametrize("text, nodes", [("500", 500), ("10k", 10_000), ("1M", 1_000_000), ("dis-ii", None),
                                         ("10x", None)])
def test_parse_size(text: str, nodes: int | None) -> None:
    assert bench_graph.parse_size(text) == nodes


def test_random_graph_is_simple_undirected_and_sized() -> None:
    g = bench_graph.random_graph(300, seed=1)
    u, v = g.edge_index
    assert g.num_nodes == 300 and g.x.shape == (300, 16) and g.x.dtype == torch.float32 and g.latent_dim == 16
    assert bool((u != v).all())
    keys = set((u * 300 + v).tolist())
    assert len(keys) == u.numel()  # no duplicate
    assert keys == set((v * 300 + u).tolist())  # both directions
    assert 0.9 * 5 * 300 < u.numel() / 2 <= 5 * 300


def test_targets_apply_to_the_right_rows() -> None:
    base = {"host_reads": 0, "launches": 10, "ms": 1.0, "peak_bytes": 1, "device_type": "cuda"}
    dis = bench_graph.targets({**base, "graph": "dis-ii", "nodes": 2665, "flow": "whc"})
    assert set(dis) == {"host_reads", "launches", "ms"} and all(c["pass"] for c in dis.values())
    big = bench_graph.targets({**base, "graph": "random-1m", "nodes": 1_000_000, "flow": "whc", "ms": 150.0})
    assert set(big) == {"host_reads", "ms", "peak_bytes"} and not big["ms"]["pass"]
    cpu = bench_graph.targets({**base, "graph": "random-1m", "nodes": 1_000_000, "flow": "whc", "host_reads": 2,
                               "device_type": "cpu"})
    assert set(cpu) == {"host_reads"} and not cpu["host_reads"]["pass"]


def test_bench_graph_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "graph.json"
    bench_main(["graph", "--graphs", "300", "--flows", "none,whc", "--epochs", "2", "--warmup", "1",
                "--json", str(out)])
    text = capsys.readouterr().out
    table = text[text.index("| graph |"):].strip().splitlines()
    assert len(table) == 2 + 2  # header, rule, one row per flow: the table is printed last
    assert "random-300" in table[2] and "whc" in table[3]
    results = json.loads(out.read_text())
    assert [r["flow"] for r in results["rows"]] == ["none", "whc"]
    for r in results["rows"]:
        assert r["nodes"] == 300 and r["ms"] > 0 and r["launches"] > 0
        assert r["host_reads"] == sum(r["host_read_sites"].values())
        assert "host_reads" in r["targets"]


def test_bench_graph_eval_memory_measures_the_final_evaluation_above_the_training_peak(tmp_path: Path,
                                                                                      capsys) -> None:
    out = tmp_path / "graph.json"
    bench_main(["graph", "--graphs", "6000", "--flows", "none", "--epochs", "2", "--warmup", "1", "--eval-memory",
                "--hierarchy-sources", "8", "--json", str(out)])
    text = capsys.readouterr().out
    assert "final evaluation" in text and "over 8 source nodes" in text and "above the training peak" in text
    (row,) = json.loads(out.read_text())["rows"]
    assert row["eval_s"] > 0 and row["eval_sources"] == 8 and row["eval_above_peak_bytes"] >= 0
    assert row["targets"]["eval_above_peak_bytes"]["pass"] == (row["eval_above_peak_bytes"] <= 2 * 2**30)


def test_bench_graph_rejects_unknown_graphs_and_flows() -> None:
    with pytest.raises(SystemExit):
        bench_main(["graph", "--graphs", "nosuchgraph"])
    with pytest.raises(SystemExit):
        bench_main(["graph", "--flows", "nc"])  # Euclidean only: not a flow of the hyperbolic graph VAE
