"""Experiments: the command line, the run protocol, the tasks, the paper's reproduction and benchmarks, over
shared datasets, models and plots (nothing in the library imports this package). docs/ARCHITECTURE.md is the map.

* :mod:`experiments.cli`: every parser; ``python -m experiments <command>`` (``density``, ``graph-recon``,
  ``graph-gen``, ``main``, ``reproduce``, ``hdensity``) and ``python -m experiments.bench flows|graph``.
* :mod:`experiments.run`: the run protocol (configs, ``RunResult``, seeds, checkpoints and ``--resume``, files,
  locks, DDP, compiled steps, measurements).
* :mod:`experiments.tasks`: one module per command; :mod:`experiments.tasks.runner` runs a ``RunConfig``.
* :mod:`experiments.paper`: the paper's tables at its settings and RESULTS.md.
* :mod:`experiments.bench`: benchmarks of the flows, the graph VAE, MAF, SNF and the geometry against geoopt.
* :mod:`~experiments.datasets`, :mod:`~experiments.models`, :mod:`~experiments.plots`,
  :mod:`~experiments.constants`: shared by the rooms.
"""
