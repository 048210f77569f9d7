"""Command-line options as fields of the commands' frozen configs: a config dataclass declares each option once
(default, type, help) with :func:`option`, the options every command shares with :func:`common`, and
:func:`add_config_arguments` / :func:`config_from_args` turn it into ``argparse`` flags and back. The command line
(:mod:`experiments.cli`) builds every parser from these; nothing else declares a flag.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     epochs: int = option(10, "training epochs", type=positive())
    ...     threads: int = common("threads", 1)
    >>> p = argparse.ArgumentParser()
    >>> add_config_arguments(p, Demo)
    >>> config_from_args(Demo, p.parse_args(["--epochs", "3"]))
    Demo(epochs=3, threads=1)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable


def positive(kind: type = int) -> Callable[[str], Any]:
    """An ``argparse`` type: a positive ``int`` (or finite ``float``), with a one-line error otherwise."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {'finite ' if kind is float else ''}"
                                             f"{kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive_{kind.__name__}"
    return parse


def nonnegative_float(text: str) -> float:
    """An ``argparse`` type: a finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def option(default: Any, help: str = "", **argparse_kwargs: Any) -> Any:
    """A config field that is also the flag ``--<name-with-dashes>`` (``argparse_kwargs``: ``type``, ``choices``,
    ``nargs``, ``metavar``...; a ``bool`` field defaulting to ``False`` is a ``store_true`` switch). A list
    default is copied per instance."""
    meta = {"help": help, **argparse_kwargs}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: The options that most commands share, written once: help text and type; each command picks its default.
COMMON: dict[str, dict[str, Any]] = {
    "threads": {"type": positive(), "help": "torch intra-op threads (1 is fastest for these small models on a "
                                            "shared CPU)"},
    "out": {"type": Path, "help": "output folder"},
    "device": {"help": "torch device: cpu, cuda, cuda:1 ..."},
    "data_root": {"type": Path, "help": "folder with the datasets in the layout of shared/data (default: "
                                        "$RF_DATA_ROOT, else ../shared/data beside the repository, else ./data)"},
    "no_progress": {"help": "no progress bar"},
    "no_verify_data": {"help": "load shared data files whose sha256 differs from the table in "
                               "experiments/constants.py (your own modified copies); by default such a file is refused"},
    "seed": {"type": int, "help": "first seed"},
}


def common(name: str, default: Any, *, help: str | None = None, **argparse_kwargs: Any) -> Any:
    """The shared option ``name`` of :data:`COMMON` as a config field with this command's ``default`` (``help``
    replaces the shared text where a command means something more specific)."""
    spec = {**COMMON[name], **argparse_kwargs}
    if help is not None:
        spec["help"] = help
    return option(default, **spec)


def add_argument(p: argparse.ArgumentParser, name: str, default: Any, meta: dict[str, Any]) -> None:
    """Add the flag of one option (``meta``: its help and ``argparse`` keywords)."""
    flag = "--" + name.replace("_", "-")
    if default is False and "type" not in meta and "choices" not in meta:
        p.add_argument(flag, action="store_true", **meta)
    else:
        p.add_argument(flag, default=default, **meta)


def add_config_arguments(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass ``cls`` declared with :func:`option` or :func:`common`."""
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        add_argument(p, f.name, default, dict(f.metadata))


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config ``cls`` of a parsed command line (the namespace's names are the fields')."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})
