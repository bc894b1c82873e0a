"""Shared fixtures: the demo config shrunk to a few iterations on a tiny generated dataset."""
import os.path as osp
import sys

import pytest

import mmpeft  # noqa: F401

HELPERS = osp.join(osp.dirname(osp.abspath(__file__)), 'helpers')
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)

from mmpeft_testing import tiny_seg_cfg  # noqa: E402


@pytest.fixture(scope='session')
def seg_data_root(tmp_path_factory) -> str:
    from mmpeft.datasets import generate_synthetic_seg
    root = str(tmp_path_factory.mktemp('data') / 'synthetic_seg')
    return generate_synthetic_seg(root, num_train=16, num_val=4, size=(64, 64), seed=1)

@pytest.fixture
def make_seg_cfg(seg_data_root, tmp_path):
    def _make(iters: int = 4, work_dir: str = None, **overrides):
        return tiny_seg_cfg(seg_data_root, work_dir or str(tmp_path / 'work'), iters, **overrides)
    return _make
