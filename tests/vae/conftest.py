"""VAE-test settings: one intra-op thread.

The graph tests run many tiny ops; on a 2-core CI machine that is shared with other jobs, torch's
two-thread kernels spin-wait for each other and run up to ~100× slower than one thread (measured: 3 µs vs
2 ms for ``log`` of a 150×8 tensor under load), so these tests pin ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
