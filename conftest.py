"""Seeds for the doctests of the packages (``--doctest-modules``): pytest runs them after whatever came before, so
each starts from seed 0 of torch, numpy and random, as every test under ``tests/`` does (``tests/conftest.py``);
an example's random draws then never depend on the order of the run."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_examples() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
