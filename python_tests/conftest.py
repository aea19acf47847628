import os

# Tests never run several torch processes in parallel; keep each one from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
