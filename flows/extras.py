"""Optional dependencies: which extra of ``pip install riemannian-flows[...]`` brings each, and the one-line error
raised when one is missing. The extras themselves are declared in ``setup.cfg``; this table is the one place the
library's code names them (``vae`` uses it too).

=============== ============================================= =====================================================
extra           packages                                      needed by
=============== ============================================= =====================================================
``graph``       torch-geometric, networkx, scikit-learn       graph conditioners (``conditioner="gcn"``/``"gat"``),
                                                              :class:`vae.GraphVAE`, :mod:`vae.generation`
``cnf``         torchdiffeq                                   ``build("cnf")``, ``build("rfm")``'s log-density
``experiments`` matplotlib, tqdm (+ ``graph``, ``cnf``)       ``python -m experiments``
``all``         every extra above
=============== ============================================= =====================================================
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: import name -> (pip name, extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch_geometric": ("torch-geometric", "graph"),
    "networkx": ("networkx", "graph"),
    "sklearn": ("scikit-learn", "graph"),
    "torchdiffeq": ("torchdiffeq", "cnf"),
    "matplotlib": ("matplotlib", "experiments"),
    "tqdm": ("tqdm", "experiments"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def missing_extra(module: str, feature: str) -> MissingExtraError:
    """The one-line error for ``feature`` needing the optional package ``module`` (its top-level import name).

    Example:
        >>> str(missing_extra("torchdiffeq", "flows.build('cnf')"))
        "flows.build('cnf') needs torchdiffeq, which is not installed: pip install 'riemannian-flows[cnf]'"
    """
    top = module.split(".")[0]
    pip_name, extra = OPTIONAL[top]
    return MissingExtraError(f"{feature} needs {pip_name}, which is not installed: "
                             f"pip install 'riemannian-flows[{extra}]'", name=top)


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming the extra to install when its package is absent
    (an import error from *inside* an installed package propagates unchanged).

    Example:
        >>> require("torch", "anything").__name__
        'torch'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name != top or top not in OPTIONAL:
            raise
        raise missing_extra(module, feature) from None
