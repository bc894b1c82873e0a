"""Fold a trained mergeable PEFT method (LoRA, SSF) into the frozen weights: a plain checkpoint.

    python tools/model_converters/merge_peft.py CONFIG CKPT OUT [--task TASK] [--out-config OUT_CFG]

CONFIG is the training config (a model whose backbone is ``build_peft_backbone(backbone=..., method=...)``),
CKPT its checkpoint (full, or a delta checkpoint, which mmpeft expands on load). Every PEFT backbone in
the model is merged (``backbone.peft.merge_and_unload``); the result must have exactly the state-dict keys of the same
model built with the plain backbones (each ``PEFTBackbone`` dict replaced by its inner ``backbone``),
and loads into it strictly. OUT holds ``meta`` and that ``state_dict``; ``--out-config`` also writes
the plain config, so ``tools/test.py OUT_CFG OUT`` evaluates the merged model with no mmpeft method.
For a model with task-wise sets (``num_tasks > 1``) ``--task`` picks the task to fold.
"""
import argparse
import copy
import os.path as osp
from typing import Any, List, Optional

import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

import mmpeft  # noqa: F401  (registers mmpeft classes; safe loading of mmengine checkpoints)
from mmpeft.registry import MODELS


def plain_model_cfg(cfg: Any) -> Any:
    """A copy of a model config with every ``PEFTBackbone`` dict replaced by its inner ``backbone``."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'PEFTBackbone':
            return plain_model_cfg(copy.deepcopy(cfg['backbone']))
        out = copy.deepcopy(cfg)
        for k in list(out.keys()):
            out[k] = plain_model_cfg(out[k])
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(plain_model_cfg(v) for v in cfg)
    return cfg


def merge_peft_modules(model: nn.Module, task: Optional[str] = None) -> List[str]:
    """Merge every PEFT backbone of ``model`` in place; returns ``'name: method'`` lines.

    Raises:
        ValueError: when the model has no PEFT backbone, or a method cannot be merged.
    """
    found = [(n, m) for n, m in model.named_modules()
             if getattr(vars(m).get('peft'), 'method', None) is not None]
    if not found:
        raise ValueError(f'{type(model).__name__} has no PEFT backbone (no module with a PEFT method in '
                         f'module.peft)')
    done = []
    for name, m in found:
        method = m.peft.method
        if not m.peft.mergeable:
            raise ValueError(f'{name or type(m).__name__}: {method!r} cannot be merged into the frozen '
                             f'weights (mergeable methods: LoRA, SSF)')
        task_key: Any = task
        if task is not None and task.isdigit():
            task_key = int(task)
        m.peft.merge_and_unload(task=task_key)
        done.append(f'{name or "<model>"}: {method!r}')
    return done


def merge_checkpoint(config: str, checkpoint: str, out: str, task: Optional[str] = None,
                     out_config: Optional[str] = None, cfg_options: Optional[dict] = None) -> dict:
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine') or 'mmengine')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    merged = merge_peft_modules(model, task)
    state = model.state_dict()

    plain_cfg = plain_model_cfg(cfg.model)
    plain = MODELS.build(plain_cfg)
    want, have = set(plain.state_dict()), set(state)
    if want != have:
        raise KeyError(f'merged model does not have the plain keys: missing {sorted(want - have)[:8]}, '
                       f'extra {sorted(have - want)[:8]}')
    plain.load_state_dict(state, strict=True)

    result = dict(meta=dict(mmpeft_merged=dict(source=osp.abspath(checkpoint), config=osp.abspath(config),
                                               task=task, methods=merged)),
                  state_dict=plain.state_dict())
    save_checkpoint(result, out)
    if out_config:
        plain_full = copy.deepcopy(cfg)
        plain_full.model = plain_cfg
        # the training config's own checks of PEFT trainable sets do not apply to the plain model
        plain_full.custom_hooks = [h for h in plain_full.get('custom_hooks', [])
                                   if h.get('type') != 'TrainableParamsHook']
        plain_full.dump(out_config)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description='Fold LoRA / SSF into the frozen weights: a plain checkpoint')
    p.add_argument('config', help='training config (its backbone a PEFTBackbone with a mergeable method)')
    p.add_argument('checkpoint', help='trained checkpoint (full or mmpeft delta)')
    p.add_argument('out', help='output checkpoint of the plain architecture')
    p.add_argument('--task', default=None, help='task name or index to fold (task-wise methods)')
    p.add_argument('--out-config', default=None, help='also write the plain config here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = p.parse_args()
    result = merge_checkpoint(args.config, args.checkpoint, args.out, args.task, args.out_config,
                              args.cfg_options)
    for line in result['meta']['mmpeft_merged']['methods']:
        print(f'merged {line}')
    print(f'wrote {args.out} ({len(result["state_dict"])} tensors, keys of the plain model)'
          + (f' and {args.out_config}' if args.out_config else ''))


if __name__ == '__main__':
    main()
