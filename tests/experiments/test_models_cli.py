"""``--model spherical|poincare|product:<spec>`` on the run commands (issue 23, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main, parse
from experiments.models import check_model, curvature_record, make_manifold
from manifolds import PoincareBall, Product, Sphere


@pytest.mark.parametrize("model, kind", [("spherical", Sphere), ("poincare", PoincareBall),
                                         ("product:h2,s2", Product)])
def test_run_commands_accept_the_new_models(model, kind) -> None:
    for command in ("graph-recon", "density"):
        cfg = parse([command, "--model", model, "--flow", "none"])
        assert cfg.model == model
        assert isinstance(make_manifold(cfg.model, dim=4 if kind is Product else 2), kind)
    assert parse(["graph-recon", "--model", "product:h2,s2", "--flow", "none"]).latent_dim == 4  # the spec fixes the dimension


def test_existing_models_and_flows_still_parse() -> None:
    cfg = parse(["graph-recon", "--model", "hyperbolic", "--flow", "whc"])
    assert (cfg.model, cfg.flow) == ("hyperbolic", "whc")
    assert parse(["density", "--model", "euclidean", "--flow", "nc"]).model == "euclidean"


@pytest.mark.parametrize("argv, message", [
    (["graph-recon", "--model", "product:h2;s2"], "cannot parse the product spec 'h2;s2'"),
    (["graph-recon", "--model", "product:q2"], "cannot parse the product spec 'q2'"),
    (["graph-recon", "--model", "sphere"], "--model must be one of"),
    (["graph-recon", "--model", "product:h2,s2", "--latent-dim", "3"], "has dimension 4"),
    (["graph-recon", "--model", "spherical", "--flow", "whc"], "does not apply to --model spherical"),
])
def test_bad_models_are_one_line_usage_errors(argv, message, usage_error) -> None:
    assert message in usage_error(argv)


def test_check_model_names_what_to_write() -> None:
    with pytest.raises(ValueError, match="product:<spec>"):
        check_model("spherical2")


def test_curvature_record_of_each_geometry() -> None:
    assert curvature_record(make_manifold("spherical", dim=2)) == {"curvature": 1.0}
    assert curvature_record(make_manifold("poincare", k=4.0)) == pytest.approx({"k": 4.0})
    assert curvature_record(make_manifold("product:h2,s2")) == pytest.approx({"curvature_0": -1.0, "curvature_1": 1.0})


@pytest.mark.parametrize("model", ["spherical", "poincare", "product:t1,p1"])
def test_graph_recon_runs_end_to_end_on_the_new_models(tmp_path: Path, model) -> None:
    out = tmp_path / "run"
    assert main(["graph-recon", "--dataset", "tree", "--model", model, "--flow", "none", "--epochs", "4",
                 "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert 0 <= res["summary"]["auc"]["mean"] <= 1 and res["config"]["model"] == model


@pytest.mark.parametrize("model", ["spherical", "product:t1,p1"])
def test_density_runs_end_to_end_on_the_new_models_and_plots_their_latents(tmp_path: Path, model) -> None:
    # a 2-d latent space gets a latent plot: the posterior's location is a vMF's mode, a product's per-factor
    # locations (a product posterior has no single `loc`; this run raised AttributeError before)
    out = tmp_path / "run"
    assert main(["density", "--dataset", "digits", "--model", model, "--latent-dim", "2", "--epochs", "1",
                 "--iwae-samples", "4", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["model"] == model and res["summary"]["test_ll"]["mean"] < 0
    assert (out / "seed0" / "latents_2d.npy").exists()
