"""``python -m experiments.bench flows`` (issues 3 and 12): eager and compiled training steps of our flows and the
peers', their ratios and their launches per step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.bench import flows as bench
from experiments.cli import bench_main


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    bench_main(["flows", "--dims", "4", "--layers", "2", "--hidden", "8", "--batch", "32", "--repeats", "15",
                "--warmup", "2", "--threads", "1", "--peers", "--out", str(out), *extra])
    return json.loads(out.read_text())


def test_eager_bench_reports_ratios_and_launches(tmp_path: Path) -> None:
    res = _run(tmp_path)
    rows = res["dims"]["4"]["rows"]
    assert res["compile"] is False and set(rows) == {"ours NC (affine coupling)", "ours TC (tangent coupling)",
                                                     "ours WHC (wrapped hyperboloid)"}
    launches = {name.split()[1]: r["launches"] for name, r in rows.items()}
    # the WHC layer does more (small) operations per step than the affine coupling: what an eager GPU step pays for
    assert 0 < launches["NC"] < launches["TC"] < launches["WHC"]
    assert [c["what"] for c in res["dims"]["4"]["checks"]] == ["TC / NC", "WHC / NC"]


def test_compiled_bench_captures_our_flows_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench._Compiled, "backend", "aot_eager")
    res = _run(tmp_path, "--compile")
    assert res["compile"] is True
    for name, note in res["notes"].items():
        assert note.endswith("compiled whole (fullgraph)"), (name, note)
    assert all(r["median_ms"] > 0 and r["launches"] > 0 for r in res["dims"]["4"]["rows"].values())


def test_a_loss_with_a_graph_break_falls_back_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench._Compiled, "backend", "aot_eager")
    w = torch.randn(3, requires_grad=True)

    def loss() -> torch.Tensor:
        v = (w * w).sum()
        if float(v.detach()) > -1.0:  # a host read: dynamo cannot capture this whole
            v = v + 1
        return v

    c = bench._Compiled(loss)
    torch.testing.assert_close(c(), loss())
    assert c.note.startswith("graph breaks: compiled with fullgraph=False")


def test_rfm_flag_times_the_sphere_against_the_hyperboloid(tmp_path: Path) -> None:
    """``--rfm`` adds the issue-23 rows (one flow-matching step, Adam included, on S² and on H²) and their ratio to the
    same run's results; the flows table is still there."""
    res = _run(tmp_path, "--no-manifold", "--rfm", "--rfm-batch", "64")
    rfm = res["rfm"]
    assert rfm["batch"] == 64 and rfm["hidden"] == 8
    assert [r["group"] for r in rfm["rows"].values()] == ["sphere", "hyperboloid"]
    assert all(r["median_ms"] > 0 for r in rfm["rows"].values())
    s, h = (r["median_ms"] for r in rfm["rows"].values())
    assert rfm["check"]["ratio"] == pytest.approx(s / h) and rfm["check"]["target"] == 1.5
    assert "4" in res["dims"]
