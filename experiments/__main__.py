"""``python -m experiments <command>`` (or the ``riemannian-flows`` script): see :mod:`experiments.cli`."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
