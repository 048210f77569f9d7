"""``graph-recon --model embedding`` (issue 23, item 7): the classic baseline on the command line, through the same
run protocol as the graph VAEs (results.json, checkpoints and --resume), and the flags that mean nothing for it
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main, parse
from experiments.constants import EMBEDDING_LR, EMBEDDING_RADIUS
from experiments.run.config import RunConfig
from vae.constants import EMBEDDING_NEGATIVES


def _run(out: Path, *extra: str) -> int:
    return main(["graph-recon", "--dataset", "tree", "--model", "embedding", "--epochs", "12", "--out", str(out),
                 "--no-progress", *extra])


@pytest.mark.parametrize("manifold", ["poincare", "lorentz"])
def test_the_embedding_runs_end_to_end_and_writes_the_graph_vaes_results(tmp_path: Path, manifold) -> None:
    out = tmp_path / "emb"
    assert _run(out, "--embedding-manifold", manifold, "--negatives", "5") == 0
    res = json.loads((out / "results.json").read_text())
    for metric in ("auc", "ap", "auc_at_best_val", "ap_at_best_val", "map", "distortion", "depth_spearman"):
        assert 0 <= res["summary"][metric]["mean"] <= (1 if metric != "distortion" else np.inf)
    cfg = res["config"]
    assert (cfg["model"], cfg["flow"], cfg["embedding_manifold"], cfg["negatives"]) == ("embedding", "none",
                                                                                        manifold, 5)
    assert cfg["lr"] == EMBEDDING_LR and cfg["final_radius"] == EMBEDDING_RADIUS  # the embedding's own defaults
    assert res["metrics"][0]["k"] == pytest.approx(EMBEDDING_RADIUS ** 2)  # fixed: no warm-up
    latents = np.load(out / "seed0" / "latents_2d.npy")  # the Poincaré-disk coordinates of the plot
    assert latents.shape[1] == 2 and (np.linalg.norm(latents, axis=1) < 1).all()


def test_an_interrupted_embedding_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """The checkpoint holds the points and RiemannianAdam's moments: stopped after 5 epochs and resumed, the run ends
    where an uninterrupted one does."""
    assert _run(tmp_path / "full", "--checkpoint-every", "5") == 0
    assert _run(tmp_path / "cut", "--checkpoint-every", "5", "--stop-after", "5") == 3
    assert _run(tmp_path / "cut", "--checkpoint-every", "5", "--resume") == 0
    full, cut = (json.loads((tmp_path / d / "results.json").read_text())["metrics"][0] for d in ("full", "cut"))
    for metric in ("auc", "ap", "map", "depth_spearman"):
        assert cut[metric] == pytest.approx(full[metric], abs=1e-6)


def test_the_embeddings_defaults_are_written_once() -> None:
    cfg = parse(["graph-recon", "--model", "embedding"])
    assert cfg == RunConfig.for_command("graph-recon", model="embedding")
    assert (cfg.flow, cfg.lr, cfg.final_radius, cfg.negatives, cfg.embedding_manifold) == (
        "none", EMBEDDING_LR, EMBEDDING_RADIUS, EMBEDDING_NEGATIVES, "poincare")
    vae = parse(["graph-recon"])  # the VAEs' defaults are unchanged
    assert (vae.flow, vae.lr, vae.final_radius) == ("whc", 1e-3, 2.0)


@pytest.mark.parametrize("argv, message", [
    (["graph-recon", "--model", "embedding", "--flow", "whc"], "--flow whc does not apply to --model embedding"),
    (["graph-recon", "--model", "embedding", "--kl-weight", "3"], "--kl-weight 3.0 does not apply"),
    (["graph-recon", "--model", "embedding", "--decoder", "distance"], "--decoder distance does not apply"),
    (["graph-recon", "--model", "embedding", "--hidden", "64"], "--hidden 64 does not apply"),
    (["graph-recon", "--model", "embedding", "--weight-decay", "0.1"], "--weight-decay 0.1 does not apply"),
    (["graph-recon", "--model", "embedding", "--flow-hidden", "32"], "--flow-hidden 32 does not apply"),
    (["graph-recon", "--model", "embedding", "--cuda-graph", "on"], "--cuda-graph on does not apply"),
    (["graph-recon", "--model", "hyperbolic", "--negatives", "5"], "--negatives only apply to --model embedding"),
    (["graph-recon", "--model", "poincare", "--flow", "none", "--embedding-manifold", "lorentz"],
     "--embedding-manifold only apply to --model embedding"),
    (["density", "--model", "embedding"], "--model embedding is a graph-recon model"),
    (["graph-recon", "--model", "embedding", "--embedding-manifold", "sphere"], "invalid choice: 'sphere'"),
])
def test_flags_that_mean_nothing_for_the_model_are_one_line_usage_errors(argv, message, usage_error) -> None:
    assert message in usage_error(argv)
