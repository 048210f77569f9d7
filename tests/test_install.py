"""The wheel, installed with the core requirements only (torch, geoopt, numpy, scipy) into a fresh virtual
environment, offline, runs the README's and the guide's core examples from outside the source tree, and a missing
extra gives one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import importlib.util

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_rf_test_docs", Path(__file__).with_name("test_docs.py"))
_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_docs)
python_blocks = _docs.python_blocks
#: import names of the optional packages (flows/extras.py): a block that names one needs an extra
OPTIONAL = ("torch_geometric", "networkx", "sklearn", "torchdiffeq", "matplotlib", "tqdm")
CORE_REQUIREMENTS = {"torch", "geoopt", "numpy", "scipy"}

#: distributions of the optional packages (and of this project's editable install), left out of the fresh venv
LEFT_OUT = ("torch_geometric", "networkx", "sklearn", "scikit_learn", "torchdiffeq", "matplotlib", "mpl_toolkits",
            "pylab", "tqdm", "riemannian_flows", "__editable__")


def _core_blocks() -> list[str]:
    """The README's and the guide's blocks that need no extra."""
    blocks = python_blocks(REPO_ROOT / "README.md") + python_blocks(REPO_ROOT / "docs" / "guide.md")
    return [src for _, src in blocks if not any(m in src for m in OPTIONAL + ("rfm", "RF_DATA_ROOT"))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(out), str(REPO_ROOT)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the wheel offline here (pip wheel --no-build-isolation): {proc.stderr[-400:]}")
    return next(out.glob("riemannian_flows-*.whl"))


@pytest.fixture(scope="module")
def core_env(wheel, tmp_path_factory) -> Path:
    """A fresh venv whose only packages are the wheel and this interpreter's packages minus the optional ones
    (linked, not downloaded: offline)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                           str(wheel)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot install the wheel offline into a fresh venv: {proc.stderr[-400:]}")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.suffix == ".pth" or entry.name.split("-")[0].split(".")[0].lower() in LEFT_OUT:
            continue
        if not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return python


def _run(python: Path, code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_the_wheel_declares_only_the_core_requirements_and_ships_py_typed(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    core = {line.split(":", 1)[1].strip().split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip()
            for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert core == CORE_REQUIREMENTS, core
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"graph", "cnf", "experiments", "all"} <= extras, extras
    for package in ("manifolds", "flows", "vae"):
        assert f"{package}/py.typed" in names


@pytest.mark.slow  # a wheel build, a venv and the examples: about a minute on an idle 2-core machine
def test_core_install_runs_the_documented_examples_from_outside_the_tree(core_env, tmp_path):
    where = _run(core_env, "import flows, vae; print(flows.__file__)", tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(REPO_ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout
    blocks = _core_blocks()
    assert len(blocks) >= 3
    # one interpreter for all blocks (each in a fresh namespace): one torch import instead of one per block
    runner = "import sys\nfor i, src in enumerate(sys.argv[1:]):\n    print('block', i, flush=True)\n" \
             "    exec(compile(src, f'<block {i}>', 'exec'), {'__name__': '__doc_block__'})\n"
    proc = _run(core_env, runner, tmp_path, *blocks)
    assert proc.returncode == 0, f"{proc.stdout[-300:]}\n---\n{proc.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("code, extra", [
    ("import torch\nfrom manifolds import Lorentz, WrappedNormal\nfrom flows import Flow, build\nM = Lorentz()\n"
     "Flow(WrappedNormal.at_origin(torch.ones(2), M), build('rfm', M, 2)).log_prob(M.origin(4, 3))", "cnf"),
    ("from manifolds import Lorentz\nfrom vae import GraphVAE\nGraphVAE(Lorentz(), 3, 2)", "graph"),
    ("from vae import GraphGenerator", "graph"),
])
def test_a_missing_extra_is_one_line_naming_it(core_env, tmp_path, code, extra):
    proc = _run(core_env, code, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"pip install 'riemannian-flows[{extra}]'" in last, proc.stderr[-1500:]
