"""PEFTFreezeHook trains exactly what it reports (issue #9 item 11); TrainableParamsHook catches a mismatch.

The model is mmdet's caffe-style ResNet with ``requires_grad=False`` BatchNorms (as mmdet's caffe
configs build it): the optimizer is built before any hook runs, so those BatchNorms are not in it.
"""
import copy
import logging
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmpeft  # noqa: F401

BASE_LR = 0.1


@MODELS.register_module(force=True)
class RobustFreezeCaffeNet(BaseModel):
    """mmdet's ResNet-18 (caffe style, frozen BN at build, 4 base channels) + a linear classifier."""

    def __init__(self):
        super().__init__()
        self.backbone = MODELS.build(dict(type='mmdet.ResNet', depth=18, base_channels=4, out_indices=(3,),
                                          style='caffe', norm_cfg=dict(type='BN', requires_grad=False),
                                          zero_init_residual=False))
        self.head = nn.Linear(32, 3)

    def forward(self, inputs, label=None, mode='loss'):
        x = self.head(self.backbone(torch.stack(inputs))[-1].mean((2, 3)))
        return dict(loss=F.cross_entropy(x, torch.as_tensor(label)))


@DATASETS.register_module(force=True)
class RobustFreezeToyData(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 32, 32, generator=g), label=i % 3)


def _cfg(work_dir, hooks):
    return dict(
        model=dict(type='RobustFreezeCaffeNet'), work_dir=str(work_dir), default_scope='mmengine',
        train_dataloader=dict(dataset=dict(type='RobustFreezeToyData'), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=BASE_LR, momentum=0.9, weight_decay=1e-2),
                           paramwise_cfg=dict(norm_decay_mult=0.,
                                              custom_keys={'backbone.layer1': dict(lr_mult=0.1)})),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], gamma=0.1, by_epoch=False),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10 ** 6, by_epoch=False)),
        custom_hooks=hooks, randomness=dict(seed=0))


class Snapshot(Hook):
    def before_train(self, runner):
        self.weights = {n: p.detach().clone() for n, p in runner.model.named_parameters()}


def test_freeze_hook_trains_params_frozen_when_the_optimizer_was_built(tmp_path):
    hooks = [dict(type='PEFTFreezeHook', trainable=['head', r'backbone\..*(bn\d|downsample\.1)']),
             dict(type='TrainableParamsHook')]
    runner = Runner.from_cfg(_cfg(tmp_path, hooks))
    frozen_at_build = {n for n, p in runner.model.named_parameters() if not p.requires_grad}
    snap = Snapshot()
    runner.register_hook(snap, 'LOWEST')
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    runner.logger.addHandler(handler)
    runner.train()

    params = dict(runner.model.named_parameters())
    expected = {n for n in params
                if n.startswith('head.') or re.search(r'\.bn\d\.|^backbone\.bn1\.|downsample\.1\.', n)}
    assert len(expected) == 2 + 2 * (1 + 8 * 2 + 3)  # head + (stem bn, 8 blocks x 2 bn, 3 downsample bn) x 2
    assert expected & frozen_at_build == expected - {'head.weight', 'head.bias'}  # BN frozen when built
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == expected
    assert any(f'PEFTFreezeHook: {len(expected)} trainable tensors' in line
               and f'{len(expected)} of them in the optimizer' in line for line in lines), lines

    groups = {n: g for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']
              for n in params if params[n] is p}
    assert set(groups) == expected
    changed = {n for n in params if not torch.equal(params[n].detach(), snap.weights[n])}
    assert changed == expected
    # lr by hand: base 0.1, x0.1 (custom key backbone.layer1), x0.1 (MultiStepLR after iteration 1)
    assert groups['backbone.layer1.0.bn1.weight']['lr'] == pytest.approx(BASE_LR * 0.1 * 0.1)
    assert groups['backbone.layer2.0.bn1.weight']['lr'] == pytest.approx(BASE_LR * 0.1)
    assert groups['head.weight']['lr'] == pytest.approx(BASE_LR * 0.1)
    assert groups['backbone.layer2.0.bn1.weight']['weight_decay'] == 0.  # norm_decay_mult
    assert groups['head.weight']['weight_decay'] == pytest.approx(1e-2)


class FlipAfterOptimizer(Hook):
    """Changes ``requires_grad`` after the optimizer was built, as a careless hook would."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def before_run(self, runner):
        dict(runner.model.named_parameters())[self.name].requires_grad_(self.value)


@pytest.mark.parametrize('name,value,message', [
    ('head.weight', False, 'the optimizer holds 1 frozen parameters'),
    ('backbone.bn1.weight', True, '1 trainable parameters are not in the optimizer'),
])
def test_params_hook_rejects_optimizer_mismatch(tmp_path, name, value, message):
    runner = Runner.from_cfg(_cfg(tmp_path, [dict(type='TrainableParamsHook')]))
    runner.register_hook(FlipAfterOptimizer(name, value), 'NORMAL')
    with pytest.raises(RuntimeError, match=message) as info:
        runner.train()
    assert name in str(info.value) and 'PEFTFreezeHook' in str(info.value)


def test_freeze_hook_without_config_cannot_add_params(tmp_path):
    cfg = _cfg(tmp_path, [])
    runner = Runner(model=cfg['model'], work_dir=cfg['work_dir'], train_dataloader=cfg['train_dataloader'],
                    train_cfg=cfg['train_cfg'], optim_wrapper=copy.deepcopy(cfg['optim_wrapper']),
                    custom_hooks=[dict(type='PEFTFreezeHook', trainable=['head', r'backbone\.bn1'])])
    with pytest.raises(RuntimeError, match=r"backbone\.bn1\.bias.*Runner\.from_cfg"):
        runner.train()
