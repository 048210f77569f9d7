"""``python -m experiments.bench flows|graph``: see :mod:`experiments.bench.flows` and :mod:`experiments.bench.graph`
(the parser: :func:`experiments.cli.build_bench_parser`)."""

from experiments.cli import bench_main

if __name__ == "__main__":
    bench_main()
