"""The tasks: one module per command (:mod:`~experiments.tasks.density`, :mod:`~experiments.tasks.graph_recon`,
:mod:`~experiments.tasks.graph_gen`, :mod:`~experiments.tasks.hdensity`, :mod:`~experiments.tasks.main_job`) and
the task-level studies (:mod:`~experiments.tasks.snf`, :mod:`~experiments.tasks.cnf_vs_whc`,
:mod:`~experiments.tasks.graph_gen_validation`); :mod:`~experiments.tasks.runner` turns a
:class:`~experiments.run.config.RunConfig` into jobs for :func:`experiments.run.protocol.run`. A task imports
:mod:`experiments.run` and the shared modules (datasets, models, plots, constants), never paper or bench.
"""
