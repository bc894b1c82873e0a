"""tools/train.py as users call it: --cfg-options, --resume CKPT, --amp."""
import argparse
import os
import os.path as osp
import sys

import pytest
import torch
from tools_import import _load

from mmpeft_testing import tiny_seg_cfg

train = _load('mmpeft_train_tool', 'tools/train.py')


def _run(argv, monkeypatch) -> None:
    monkeypatch.setattr(sys, 'argv', ['train.py', *argv])
    train.main()


def _weights(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def test_cfg_options_and_resume_from_an_explicit_checkpoint(seg_data_root, tmp_path, monkeypatch):
    work = str(tmp_path / 'work')
    cfg = tiny_seg_cfg(seg_data_root, work, iters=10)
    cfg.custom_hooks = []  # full checkpoints (train.py adds its own default hooks)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    every_iter = ['default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5']
    _run([cfg_path, '--work-dir', work, '--no-validate', '--cfg-options', 'train_cfg.max_iters=2',
          *every_iter], monkeypatch)
    # --cfg-options shortened the run from 10 to 2 iterations
    assert osp.isfile(osp.join(work, 'iter_2.pth')) and not osp.exists(osp.join(work, 'iter_3.pth'))
    first_iter_2 = _weights(osp.join(work, 'iter_2.pth'))
    first_file = os.stat(osp.join(work, 'iter_2.pth')).st_ino
    # --resume CKPT resumes from that file, not from the newest one (iter_2)
    _run([cfg_path, '--work-dir', work, '--no-validate', '--resume', osp.join(work, 'iter_1.pth'),
          '--cfg-options', 'train_cfg.max_iters=3', *every_iter], monkeypatch)
    ckpt_3 = torch.load(osp.join(work, 'iter_3.pth'), map_location='cpu', weights_only=False)
    assert ckpt_3['meta']['iter'] == 3
    # iteration 2 was trained (and saved: a new file) again from iteration 1, to the same weights
    assert os.stat(osp.join(work, 'iter_2.pth')).st_ino != first_file
    again_iter_2 = _weights(osp.join(work, 'iter_2.pth'))
    assert again_iter_2.keys() == first_iter_2.keys()
    assert all(torch.equal(again_iter_2[k], first_iter_2[k]) for k in first_iter_2)
    assert not all(torch.equal(ckpt_3['state_dict'][k], first_iter_2[k]) for k in first_iter_2)


def test_resume_of_a_missing_file_is_named(tmp_path, monkeypatch):
    args = argparse.Namespace(config=str(tmp_path / 'x.py'), cfg_options=None, work_dir=None,
                              launcher='none', amp=False, resume=str(tmp_path / 'nope.pth'),
                              no_validate=False)
    (tmp_path / 'x.py').write_text("model = dict(type='X')\n")
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        train.build_cfg(args)


def test_amp(tmp_path, monkeypatch):
    (tmp_path / 'x.py').write_text("model = dict(type='X')\noptim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))\n")
    args = argparse.Namespace(config=str(tmp_path / 'x.py'), cfg_options=None, work_dir=None,
                              launcher='none', amp=True, resume=None, no_validate=False)
    if torch.cuda.is_available():
        cfg = train.build_cfg(args)
    else:
        with pytest.raises(RuntimeError, match='--amp .* needs a GPU'):
            train.build_cfg(args)
        monkeypatch.setattr(train, 'get_device', lambda: 'cuda')
        cfg = train.build_cfg(args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1)
