"""``python -m experiments.bench flows|graph``: see :mod:`experiments.bench.flows` and :mod:`experiments.bench.graph`."""

from experiments.bench.flows import main

if __name__ == "__main__":
    main()
