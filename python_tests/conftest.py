# The tests run with torch's own thread count for this machine (no count tuned to one machine);
# tests that start processes give each child the parent's count and run one at a time, and
# every bitwise comparison compares runs made with the same thread count.
import pytest
import torch


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
