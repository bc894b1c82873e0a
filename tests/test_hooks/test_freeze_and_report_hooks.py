import logging

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner


class SnapshotHook(Hook):
    """Copies the weights when training starts (after the runner's weight init and loading)."""

    def before_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        self.weights = {n: p.detach().clone() for n, p in model.named_parameters()}


def _plain_swin_cfg(make_seg_cfg, **kw):
    """The demo model without PEFTBackbone: a plain mmseg Swin, frozen only by the hook."""
    cfg = make_seg_cfg(**kw)
    cfg.model.backbone = cfg.model.backbone.backbone
    cfg.custom_hooks = [dict(type='PEFTFreezeHook', trainable=['decode_head', r'backbone\..*norm'])]
    return cfg


def test_freeze_hook_trains_exactly_the_declared_set(make_seg_cfg):
    cfg = _plain_swin_cfg(make_seg_cfg, iters=3)
    runner = Runner.from_cfg(cfg)
    snap = SnapshotHook()
    runner.register_hook(snap, 'LOWEST')
    runner.train()
    before = snap.weights
    params = dict(runner.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {n for n in params if n.startswith('decode_head')
                         or (n.startswith('backbone.') and 'norm' in n)}
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable
    assert any(n.startswith('backbone.') for n in changed)
    held = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert held == {id(params[n]) for n in trainable}


def test_freeze_hook_pattern_matching_nothing(make_seg_cfg):
    cfg = _plain_swin_cfg(make_seg_cfg, iters=1)
    cfg.custom_hooks = [dict(type='PEFTFreezeHook', trainable=['decode_head', 'nekc'])]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match="nekc"):
        runner.train()


def test_params_hook_logs_table(make_seg_cfg, caplog):
    cfg = make_seg_cfg(iters=1)
    cfg.custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\..*bias$', 'decode_head'],
                             expect_frozen=[r'backbone\..*weight$'])]
    runner = Runner.from_cfg(cfg)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    runner.logger.addHandler(handler)
    runner.train()
    text = '\n'.join(lines)
    from mmpeft.utils.param_count import count_params
    counts = count_params(runner.model)
    enc = counts['Encoder']
    assert f"| Encoder | {enc['trainable'] / 1e6:.2f} | {enc['total'] / 1e6:.2f} |" in text
    assert 'Encoder / All trainable (M):' in text
    assert '| Heads |' in text and '| All |' in text


def test_params_hook_errors(make_seg_cfg):
    cfg = make_seg_cfg(iters=1)
    cfg.custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\..*weight$'])]
    with pytest.raises(RuntimeError, match='match frozen parameters'):
        Runner.from_cfg(cfg).train()
    cfg = make_seg_cfg(iters=1, work_dir=cfg.work_dir + '2')
    cfg.custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=['no_such_module'])]
    with pytest.raises(ValueError, match='no_such_module'):
        Runner.from_cfg(cfg).train()
    cfg = make_seg_cfg(iters=1, work_dir=cfg.work_dir + '3')
    cfg.model.backbone.method = dict(type='FrozenBackbone')
    cfg.custom_hooks = [dict(type='PEFTFreezeHook', trainable=['decode_head'], frozen=['decode_head']),
                        dict(type='TrainableParamsHook')]
    with pytest.raises(ValueError, match='empty'):
        Runner.from_cfg(cfg).train()
