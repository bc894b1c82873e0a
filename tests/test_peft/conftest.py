"""Fixtures of the PEFT tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run ~100x faster on one thread than on two when the 2-core machine is shared
    (OpenMP workers spin against other processes); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
