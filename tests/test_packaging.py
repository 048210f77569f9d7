"""Tests of the test machinery itself: conftest options/fixtures, seeding, packaging metadata."""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CONFTEST = TESTS_DIR / "conftest.py"


def _load_conftest():
    """The conftest as a standalone module (pytest may hold several modules named `conftest`)."""
    spec = importlib.util.spec_from_file_location("_rf_tests_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_root_fixture_points_at_the_offline_datasets(data_root: Path) -> None:
    assert data_root.is_absolute()
    assert data_root.is_dir()
    assert (data_root / "hgcn").is_dir(), f"{data_root} has no hgcn/; is it a copy of shared/data?"


def test_resolve_data_root_precedence(tmp_path: Path) -> None:
    resolve = _load_conftest().resolve_data_root
    repo = tmp_path / "repo"
    repo.mkdir()
    cli, env = tmp_path / "cli", tmp_path / "env"

    # Nothing given and no ../shared/data beside the repository.
    assert resolve(None, {}, repo) is None
    assert resolve(None, {"RF_DATA_ROOT": ""}, repo) is None  # empty (as `make` passes it) = unset
    # The ../shared/data default is used only if it exists.
    default = tmp_path / "shared" / "data"
    default.mkdir(parents=True)
    assert resolve(None, {}, repo) == default
    assert resolve(None, {"RF_DATA_ROOT": ""}, repo) == default
    # Environment beats the default, --data-root beats both; paths come back absolute.
    assert resolve(None, {"RF_DATA_ROOT": str(env)}, repo) == env
    assert resolve(str(cli), {"RF_DATA_ROOT": str(env)}, repo) == cli
    assert resolve("relative/dir", {}, repo).is_absolute()


def _run_inner_pytest(tmp_path: Path, *args: str, env_root: str | None) -> subprocess.CompletedProcess:
    """Run pytest on a throwaway project that uses this conftest and has no ../shared/data."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "conftest.py").write_text(CONFTEST.read_text())
    (project / "tests" / "test_inner.py").write_text(
        "def test_show(data_root, dtype, device):\n"
        "    print(f'\\nDATA_ROOT={data_root} DTYPE={dtype} DEVICE={device}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RF_DATA_ROOT"}
    if env_root is not None:
        env["RF_DATA_ROOT"] = env_root
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-s", *args, "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_data_root_fixture_skips_with_a_clear_reason_when_absent(tmp_path: Path) -> None:
    result = _run_inner_pytest(tmp_path, env_root=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout, result.stdout
    assert "pass --data-root or set RF_DATA_ROOT" in result.stdout, result.stdout


def test_data_root_and_dtype_options_reach_the_fixtures(tmp_path: Path) -> None:
    from_env, from_cli = tmp_path / "from_env", tmp_path / "from_cli"
    from_env.mkdir()
    from_cli.mkdir()
    result = _run_inner_pytest(
        tmp_path, "--data-root", str(from_cli), "--dtype", "float32", env_root=str(from_env)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout, result.stdout
    assert f"DATA_ROOT={from_cli} DTYPE=torch.float32 DEVICE=cpu" in result.stdout, result.stdout


@pytest.mark.parametrize("attempt", range(2))
def test_every_test_starts_from_seed_zero(attempt: int) -> None:
    expected = torch.rand(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(5), expected)
    torch.rand(100)  # disturb the global RNG; the next test must not see it


def test_dtype_and_device_defaults(dtype: torch.dtype, device: torch.device, pytestconfig) -> None:
    assert dtype == {"float64": torch.float64, "float32": torch.float32}[pytestconfig.getoption("--dtype")]
    assert device == torch.device(pytestconfig.getoption("--device"))
    assert torch.zeros(1, dtype=dtype, device=device).dtype == dtype


def test_hypothesis_ci_profile_is_loaded_by_default() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci":
        pytest.skip("another hypothesis profile was selected with HYPOTHESIS_PROFILE")
    current = hypothesis.settings()
    assert current.max_examples == 50
    assert current.derandomize is True
    assert current.deadline is None


def test_slow_marker_is_registered(pytestconfig) -> None:
    assert any(line.split(":")[0].strip() == "slow" for line in pytestconfig.getini("markers"))


def test_installed_metadata_matches_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    name, version = cfg["metadata"]["name"], cfg["metadata"]["version"]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed (run `make test`, which does `pip install -e .[test]`)")
    assert installed == version, f"stale install: {installed} != setup.cfg {version}; rerun `make venv`"


def _experiments_imports() -> dict[str, set[str]]:
    """Module -> the ``experiments`` modules it imports (module- and function-level; dotted names, a package's
    ``__init__`` under the package's name)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    paths = {}
    for path in (root / "experiments").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    deps: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in paths else module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        deps[name] = {d for d in found if d in paths} - {name}
    return deps


def test_no_module_of_experiments_imports_in_a_circle():
    """Module- and function-level imports between ``experiments/`` modules form no cycle (issue 13)."""
    deps = _experiments_imports()
    assert "experiments.run.protocol" in deps and "experiments.tasks.runner" in deps  # the walk sees the rooms

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in deps[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(deps)) if c]
    assert not cycles, f"import cycles: {cycles}"


#: the rooms of ``experiments/`` (docs/ARCHITECTURE.md) and the rooms each may not import: the arrows go
#: cli -> paper -> tasks -> run -> shared, and cli -> bench -> tasks; the shared modules (datasets, models, plots,
#: constants) import no room
FORBIDDEN = {"shared": {"run", "tasks", "paper", "bench", "cli"}, "run": {"tasks", "paper", "bench", "cli"},
             "tasks": {"paper", "bench", "cli"}, "paper": {"bench", "cli"}, "bench": {"paper", "cli"}, "cli": set()}


def _room(module: str) -> str:
    """The room of an ``experiments`` module; the entry points (``__main__``) count as the command line."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "cli" or parts[-1] == "__main__":
        return "cli"
    return parts[1] if parts[1] in FORBIDDEN else "shared"


def test_each_room_of_experiments_imports_only_the_rooms_below_it():
    """tasks never import paper or bench; run never imports tasks; nothing but the entry points imports the CLI."""
    wrong = sorted(f"{m} -> {d}" for m, ds in _experiments_imports().items() for d in ds
                   if _room(d) in FORBIDDEN[_room(m)])
    assert not wrong, f"imports against the arrows of docs/ARCHITECTURE.md: {wrong}"
    assert _room("experiments.run.config") == "run" and _room("experiments.datasets") == "shared"
    assert _room("experiments.bench.__main__") == "cli" and _room("experiments.tasks.hdensity") == "tasks"
