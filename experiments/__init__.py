"""Experiments: datasets, training runners, the command line, benchmarks and plots (nothing in the library
imports this package).

* ``python -m experiments <command>`` (:mod:`experiments.cli`): ``density``, ``graph-recon``,
  ``graph-gen``, ``main`` (the README's main job) and ``reproduce`` (the paper's tables → RESULTS.md).
* :mod:`~experiments.datasets` loaders over the ``shared/data`` layout; :mod:`~experiments.run.protocol` the shared run
  protocol (seeds, progress bar, atomic checkpoints and ``--resume``, ``results.json``, CSV);
  :mod:`~experiments.tasks.density`, :mod:`~experiments.tasks.graph_recon`, :mod:`~experiments.tasks.graph_gen` the three tasks;
  :mod:`~experiments.run.distributed` DDP under ``torchrun``; :mod:`~experiments.plots`; :mod:`~experiments.paper`
  the paper's numbers.
"""
