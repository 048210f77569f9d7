"""Benchmarks: ``python -m experiments.bench flows|graph`` (:mod:`~experiments.bench.flows`, with ``--maf``
:mod:`~experiments.bench.maf` and ``--rfm`` :mod:`~experiments.bench.rfm`; :mod:`~experiments.bench.graph`),
:mod:`~experiments.bench.snf` and :mod:`~experiments.bench.demo` (ours against geoopt). They time tasks' jobs and
library flows; no task imports them.
"""
