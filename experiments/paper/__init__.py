"""The paper's reproduction: :mod:`~experiments.paper.reproduce` (which runs, at which settings),
:mod:`~experiments.paper.report` (RESULTS.md from the runs on disk) and :mod:`~experiments.paper.numbers` (the
paper's published figures). It runs tasks through :func:`experiments.tasks.runner.run_command`; nothing below it
imports it.
"""
