"""Shared fixtures: the demo config shrunk to a few iterations on a tiny generated dataset."""
import copy
import os
import os.path as osp
import sys

import pytest

import mmpeft  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'bitfit_swin-tiny_synthetic-seg-64x64.py')
HELPERS = osp.join(ROOT, 'tests', 'helpers')
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)


@pytest.fixture(scope='session')
def seg_data_root(tmp_path_factory) -> str:
    from mmpeft.datasets import generate_synthetic_seg
    root = str(tmp_path_factory.mktemp('data') / 'synthetic_seg')
    return generate_synthetic_seg(root, num_train=16, num_val=4, size=(64, 64), seed=1)


def tiny_seg_cfg(data_root: str, work_dir: str, iters: int = 4, **overrides):
    """The demo config on ``data_root`` for ``iters`` iterations, checkpoint at the end, no val."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].dataset.generate = None
        cfg[key].batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=10 ** 6)
    # fixed schedule length and no random flip: runs of different lengths share one trajectory
    cfg.param_scheduler = [dict(type='PolyLR', power=1.0, begin=0, end=100, eta_min=1e-5, by_epoch=False)]
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomFlip':
            t['prob'] = 0.0
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters,
                                        max_keep_ckpts=10)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.merge_from_dict(overrides)
    return cfg


@pytest.fixture
def make_seg_cfg(seg_data_root, tmp_path):
    def _make(iters: int = 4, work_dir: str = None, **overrides):
        return tiny_seg_cfg(seg_data_root, work_dir or str(tmp_path / 'work'), iters, **overrides)
    return _make
