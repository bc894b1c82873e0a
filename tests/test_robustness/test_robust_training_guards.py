"""FiniteCheckHook: a NaN / Inf loss stops training at once, and no non-finite checkpoint is written."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.runner import Runner
from mmseg.models import SegDataPreProcessor

from mmpeft.hooks import FiniteCheckHook
from mmpeft.registry import MODELS


@MODELS.register_module(force=True)
class NaNPixelSegDataPreProcessorC(SegDataPreProcessor):
    """mmseg's preprocessor that makes one pixel of the first training image NaN (a corrupt image)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        if training:
            data['inputs'][0, 0, 0, 0] = float('nan')
        return data


def _nan_pixel(cfg):
    cfg.model.data_preprocessor.type = 'NaNPixelSegDataPreProcessorC'
    return cfg


def _saved(work_dir):
    """Every checkpoint file in ``work_dir`` -> whether all its floating tensors are finite."""
    out = {}
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        sd = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
        out[osp.basename(path)] = all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    return out


def test_huge_lr_stops_at_the_first_nan_loss_naming_it(make_seg_cfg):
    cfg = make_seg_cfg(iters=6)
    cfg.optim_wrapper.optimizer.lr = 1e6
    cfg.custom_hooks.append(dict(type='FiniteCheckHook'))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError, match=r'non-finite loss at iteration \d+: .*decode\.loss_ce=nan') as e:
        runner.train()
    msg = str(e.value)
    assert 'lower the learning rate' in msg and 'optim_wrapper.optimizer.lr' in msg and 'lr=' in msg
    bad_iter = int(re.search(r'iteration (\d+)', msg).group(1))
    # the run stopped at the reported iteration, whose logged loss is NaN, before its last iteration
    assert runner.iter + 1 == bad_iter < 6
    assert torch.isnan(torch.as_tensor(runner.message_hub.get_scalar('train/decode.loss_ce').current()))
    assert _saved(cfg.work_dir) == {'base_weights.pth': True}


def test_one_nan_pixel_stops_epoch_based_training_at_its_first_step(make_seg_cfg):
    cfg = _nan_pixel(make_seg_cfg())
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=10)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.default_hooks.checkpoint.interval = 1  # would save this very step: the loss check must run first
    cfg.custom_hooks.append(dict(type='FiniteCheckHook'))
    with pytest.raises(FloatingPointError, match=r'at epoch 1, iteration 1 \(batch 1 of the epoch\): '
                                                 r'loss=nan, decode\.loss_ce=nan') as e:
        Runner.from_cfg(cfg).train()
    assert 'check the data of this batch' in str(e.value) and 'img_dir/train/' in str(e.value)
    assert _saved(cfg.work_dir) == {'base_weights.pth': True}


@pytest.mark.parametrize('finite_first', [True, False])
def test_non_finite_weights_are_never_saved_also_as_delta(make_seg_cfg, finite_first):
    cfg = _nan_pixel(make_seg_cfg(iters=2))
    cfg.default_hooks.checkpoint.interval = 1
    hook = dict(type='FiniteCheckHook', interval=10 ** 6)  # loss check off: only the save guard acts
    # same priority (LOW) as DeltaCheckpointHook: registration order decides which trims / checks first
    cfg.custom_hooks = ([hook] + cfg.custom_hooks) if finite_first else (cfg.custom_hooks + [hook])
    runner = Runner.from_cfg(cfg)
    names = [type(h).__name__ for h in runner.hooks]
    assert (names.index('FiniteCheckHook') < names.index('DeltaCheckpointHook')) == finite_first
    with pytest.raises(FloatingPointError, match=r'refusing to save a checkpoint at iteration 1: (\d+) tensors') as e:
        runner.train()
    named = re.findall(r"'([^']+)'", str(e.value).split('values: ')[1])
    model_sd = runner.model.state_dict()
    assert named and all(not torch.isfinite(model_sd[k]).all() for k in named)
    assert _saved(cfg.work_dir) == {'base_weights.pth': True}  # the delta's base, written before training


def test_interval_is_validated_and_checkpoint_check_can_be_disabled():
    with pytest.raises(ValueError, match='interval must be >= 1, got 0'):
        FiniteCheckHook(interval=0)
    ckpt = dict(state_dict=dict(w=torch.tensor([1.0, float('inf')])))
    FiniteCheckHook(check_checkpoint=False).before_save_checkpoint(None, ckpt)
    runner = type('FakeRunner', (), dict(iter=4))()
    ckpt['state_dict']['step'] = torch.tensor(3)  # integer tensors are not checked
    with pytest.raises(FloatingPointError, match=r"iteration 5: 1 tensors .*\['w'\]"):
        FiniteCheckHook().before_save_checkpoint(runner, ckpt)
