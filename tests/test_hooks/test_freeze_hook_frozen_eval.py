"""PEFTFreezeHook keeps frozen dropout / drop-path / norms in eval mode inside runner.train()."""
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.runner import Runner


class ModeProbe(Hook):
    """Records, at every training iteration, which dropout-like modules are in training mode."""

    def __init__(self):
        self.training_modules = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = getattr(runner.model, 'module', runner.model)
        self.training_modules.append(
            {n for n, m in model.named_modules()
             if m.training and (isinstance(m, (nn.Dropout, nn.Dropout2d))
                                   or type(m).__name__ == 'DropPath')})


def _cfg(make_seg_cfg, frozen_eval: bool):
    cfg = make_seg_cfg(iters=2)
    cfg.model.backbone = cfg.model.backbone.backbone       # a plain mmseg Swin, frozen by the hook
    cfg.model.backbone.drop_rate = 0.5                      # nn.Dropout after the patch embedding
    cfg.model.backbone.drop_path_rate = 0.3                 # DropPath in every block
    cfg.model.decode_head.dropout_ratio = 0.1               # nn.Dropout2d in the trainable head
    cfg.custom_hooks = [dict(type='PEFTFreezeHook', trainable=['decode_head'], frozen_eval=frozen_eval)]
    return cfg


def test_frozen_dropout_stays_off_in_training(make_seg_cfg):
    runner = Runner.from_cfg(_cfg(make_seg_cfg, frozen_eval=True))
    probe = ModeProbe()
    runner.register_hook(probe, 'LOWEST')
    runner.train()
    assert len(probe.training_modules) == 2
    # every backbone dropout / drop-path is frozen (it has no trainable parameter): all in eval
    assert all(not any(n.startswith('backbone.') for n in s) for s in probe.training_modules)
    # the trainable decode head's own dropout keeps training (the hook trains what it reports)
    assert all('decode_head.dropout' in s for s in probe.training_modules), probe.training_modules


def test_frozen_eval_off_leaves_them_training(make_seg_cfg):
    runner = Runner.from_cfg(_cfg(make_seg_cfg, frozen_eval=False))
    probe = ModeProbe()
    runner.register_hook(probe, 'LOWEST')
    runner.train()
    assert any(n.startswith('backbone.') for n in probe.training_modules[-1])
