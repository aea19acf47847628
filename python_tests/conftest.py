# The tests run with torch's own thread count for this machine (no count tuned to one machine);
# tests that start processes give each child the parent's count and run one at a time, and
# every bitwise comparison compares runs made with the same thread count.
import os

import pytest
import torch


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# Config.deterministic on CUDA needs cuBLAS's workspace setting before the process first uses
# cuBLAS: the device tier sets it here, before any test touches the GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
