"""Test helper (not part of mmpeft): each rank writes its trainable weights after training."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpTrainableHook(Hook):
    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        optim_names = []
        by_id = {id(p): n for n, p in model.named_parameters()}
        for g in runner.optim_wrapper.optimizer.param_groups:
            optim_names += [by_id[id(p)] for p in g['params']]
        torch.save(dict(state=state, optim=optim_names, wrapped=is_model_wrapper(runner.model),
                        iter=runner.iter),
                   osp.join(runner.work_dir, f'rank{get_rank()}_trainable.pth'))
