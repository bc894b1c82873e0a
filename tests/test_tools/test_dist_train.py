"""tools/dist_train.sh with 2 CPU processes (gloo): trainable weights stay identical across ranks."""
import os
import os.path as osp
import socket
import subprocess

import pytest
import torch

from mmpeft_testing import HELPERS, ROOT, tiny_seg_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('freeze', ['hook', 'build'])
def test_two_process_ddp(seg_data_root, tmp_path, freeze):
    work = str(tmp_path / 'work')
    cfg = tiny_seg_cfg(seg_data_root, work, iters=3)
    cfg.custom_imports = dict(imports=['mmpeft', 'dump_trainable_hook'], allow_failed_imports=False)
    cfg.find_unused_parameters = False
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    if freeze == 'hook':
        # plain Swin, frozen by the hook after mmengine has already wrapped it in DDP
        cfg.model.backbone = cfg.model.backbone.backbone
        cfg.custom_hooks = [dict(type='PEFTFreezeHook', trainable=['decode_head', r'backbone\..*norm']),
                            dict(type='DumpTrainableHook')]
    else:
        cfg.custom_hooks = [dict(type='TrainableParamsHook'), dict(type='DumpTrainableHook')]
    cfg_path = str(tmp_path / 'ddp_cfg.py')
    cfg.dump(cfg_path)
    env = dict(os.environ, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([HELPERS, os.environ.get('PYTHONPATH', '')]))
    res = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg_path, '2', '--work-dir', work],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r0 = torch.load(osp.join(work, 'rank0_trainable.pth'), weights_only=False)
    r1 = torch.load(osp.join(work, 'rank1_trainable.pth'), weights_only=False)
    assert r0['wrapped'] and r1['wrapped'] and r0['iter'] == r1['iter'] == 3
    assert set(r0['state']) == set(r1['state']) and r0['state']
    for k in r0['state']:
        assert torch.equal(r0['state'][k], r1['state'][k]), k
    # the optimizer holds exactly the trainable set on every rank
    assert sorted(r0['optim']) == sorted(r0['state']) == sorted(r1['optim'])
    if freeze == 'hook':
        assert all(k.startswith('decode_head') or 'norm' in k for k in r0['state'])
        assert any(k.startswith('backbone.') for k in r0['state'])
    if freeze == 'build':
        # tools/dist_test.sh on the checkpoint just written, same 2 processes
        env['PORT'] = str(_free_port())
        out = osp.join(work, 'metrics.json')
        res = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), cfg_path, osp.join(work, 'iter_3.pth'),
                              '2', '--work-dir', work, '--out', out],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        import json
        metrics = json.load(open(out))
        assert 0.0 <= metrics['mIoU'] <= 100.0 and 'aAcc' in metrics
