"""Shared pytest options and fixtures for the whole test suite.

Options (see ``pytest --help``):

* ``--data-root DIR``: offline datasets (a copy of ``shared/data``). Default: the ``RF_DATA_ROOT``
  environment variable, else ``../shared/data`` next to the repository if it exists. Tests that
  request the ``data_root`` fixture are skipped when no such directory is found.
* ``--dtype {float64,float32}``: floating dtype for the ``dtype`` fixture (default float64).
* ``--device DEV``: torch device for the ``device`` fixture (default cpu).

Hypothesis profiles: ``ci`` (default; deterministic, 50 examples, no deadline) and ``dev``
(more examples, random); pick one with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_ENV = "RF_DATA_ROOT"
DATA_ROOT_SKIP_REASON = (
    "offline datasets not found; pass --data-root or set RF_DATA_ROOT to a copy of shared/data"
)
DTYPES = {"float64": torch.float64, "float32": torch.float32}

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the [test] extra; tests that need it import it themselves
    settings = None
else:
    settings.register_profile(
        "ci",
        deadline=None,
        max_examples=50,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "dev",
        deadline=None,
        max_examples=500,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def resolve_data_root(
    cli_value: str | None, environ: Mapping[str, str], repo_root: Path = REPO_ROOT
) -> Path | None:
    """Where the offline datasets are expected, before checking that the directory exists.

    Precedence: ``--data-root`` value, then a non-empty ``RF_DATA_ROOT``, then
    ``repo_root/../shared/data`` if that directory exists, else ``None``.
    """
    for value in (cli_value, environ.get(DATA_ROOT_ENV)):
        if value:
            return Path(value).expanduser().resolve()
    default = repo_root.parent / "shared" / "data"
    return default.resolve() if default.is_dir() else None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("riemannian-flows")
    group.addoption(
        "--data-root",
        default=None,
        metavar="DIR",
        help=f"directory with the offline datasets (a copy of shared/data); default: ${DATA_ROOT_ENV}, "
        "else ../shared/data beside the repository if it exists",
    )
    group.addoption(
        "--dtype",
        default="float64",
        choices=sorted(DTYPES),
        help="floating dtype used by tests through the `dtype` fixture (default: float64)",
    )
    group.addoption(
        "--device",
        default="cpu",
        help="torch device used by tests through the `device` fixture (default: cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device} requested but torch.cuda.is_available() is False")


def pytest_report_header(config: pytest.Config) -> list[str]:
    root = resolve_data_root(config.getoption("--data-root"), os.environ)
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci") if settings is not None else "n/a (not installed)"
    return [
        f"riemannian-flows: torch {torch.__version__}, dtype={config.getoption('--dtype')}, "
        f"device={config.getoption('--device')}, hypothesis profile={profile}",
        f"riemannian-flows: data root = {root if root is not None and root.is_dir() else 'not found'}",
    ]


@pytest.fixture(scope="session")
def data_root(pytestconfig: pytest.Config) -> Path:
    """Absolute path of the offline datasets directory; skips the test if there is none."""
    root = resolve_data_root(pytestconfig.getoption("--data-root"), os.environ)
    if root is None:
        pytest.skip(DATA_ROOT_SKIP_REASON)
    if not root.is_dir():
        pytest.skip(f"{DATA_ROOT_SKIP_REASON} ({root} is not a directory)")
    return root


@pytest.fixture(scope="session")
def dtype(pytestconfig: pytest.Config) -> torch.dtype:
    """Floating dtype chosen with ``--dtype`` (default ``torch.float64``)."""
    return DTYPES[pytestconfig.getoption("--dtype")]


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """Torch device chosen with ``--device`` (default cpu)."""
    return torch.device(pytestconfig.getoption("--device"))


@pytest.fixture
def validating():
    """Host-reading checks on for the test (``manifolds.validation``): overflow raises ``ValueError``."""
    from manifolds import validation

    with validation(True):
        yield


def _count_host_reads(fn) -> int:
    """How many times ``fn()`` reads a tensor value on the host (``item``, ``bool``, ``int``, ``float``, ``tolist``,
    ``numpy``): each is a device synchronisation on a GPU and a graph break under ``torch.compile``."""
    from torch.overrides import TorchFunctionMode

    reads = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy}
    seen = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in reads:
                seen.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return len(seen)


@pytest.fixture
def host_reads():
    """``host_reads(fn) -> int``: host reads of tensor values made by ``fn()`` (see ``_count_host_reads``)."""
    return _count_host_reads
