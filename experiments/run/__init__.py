"""The run protocol: what every command's run does whatever its task, and nothing task-specific.

:mod:`~experiments.run.config` (the typed, frozen configs of every command), :mod:`~experiments.run.result`
(``RunResult``: ``results.json``), :mod:`~experiments.run.protocol` (the seed and epoch loop, ``--resume``),
:mod:`~experiments.run.seeding`, :mod:`~experiments.run.checkpoints`, :mod:`~experiments.run.files` (atomic
writes, the CSV), :mod:`~experiments.run.locks`, :mod:`~experiments.run.steps` (compiled / CUDA-graph training
steps, Adam), :mod:`~experiments.run.distributed` (DDP), :mod:`~experiments.run.allocator`,
:mod:`~experiments.run.profiling` and :mod:`~experiments.run.timing` (measurements). It imports no task, paper
or benchmark module.
"""
