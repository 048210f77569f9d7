"""Every test and every doctest of the packages (``--doctest-modules``) starts from seed 0 of torch, numpy and
random, whatever ran before it: an example's or a test's random draws never depend on the order of the run. (The
suite's options and fixtures are in ``tests/conftest.py``.)"""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
