"""Export a trained Hyperformer / Polyhistor / Polyhistor-Lite model as plain per-task adapters.

    python tools/model_converters/export_task_adapters.py CONFIG CKPT OUT_DIR [--cfg-options K=V ...]

In inference the hyper-networks' outputs depend only on the task, so a deployed model needs only the
adapter weights they generate. The model of CONFIG is built, CKPT (full or mmpeft delta) is loaded
strictly, every task's adapter weights are generated once and stored as a
:class:`~mmpeft.peft.task_conditioned.TaskAdapters` method (``w_down, b_down, w_up, b_up, gamma, beta``
per site and task); task embeddings and hyper-networks are gone. OUT_DIR gets

- ``config.py``: CONFIG with the backbone's method replaced (``PolyhistorSwin(mode='task_adapters')``
  or ``method=dict(type='TaskAdapters', ...)``);
- ``task_adapters.pth``: the whole model's state dict for it (written atomically).

Before writing, both models run every task on the same random images and the largest difference of
the backbone features is printed and must be <= ``--atol`` (default 1e-5).
"""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from export_adapter import load_trained  # noqa: E402

from mmpeft.peft.task_conditioned import TaskAdapters, TaskConditionedAdapters, export_task_adapters  # noqa: E402
from mmpeft.registry import MODELS  # noqa: E402

WEIGHTS = 'task_adapters.pth'


def _cfg_at(cfg: Config, name: str):
    """The config dict of the module ``name`` (``backbone``: ``cfg.model.backbone``)."""
    node = cfg.model
    for part in name.split('.') if name else []:
        node = node.get(part) if hasattr(node, 'get') else None
        if node is None:
            raise KeyError(f'no config for module {name!r} under model in the config')
    return node


def _replace_method(node, method_cfg: dict) -> None:
    if node.get('type') in ('PolyhistorSwin', 'mmpeft.PolyhistorSwin'):
        for key in ('rank', 'embed_dims_task', 'factorization', 'scales'):
            node.pop(key, None)
        node['mode'] = 'task_adapters'
        node['reduction_ratio'] = method_cfg['reduction_ratio']
    elif isinstance(node.get('method'), dict):
        node['method'] = method_cfg
    else:
        raise ValueError(f'do not know where the method of backbone config {dict(node)} is: expected '
                         f'PolyhistorSwin or a config with method=dict(...)')


def export(config: str, checkpoint: str, out_dir: str, cfg_options: Optional[dict] = None,
           atol: float = 1e-5, image_size: int = 64) -> dict:
    """Write ``config.py`` and ``task_adapters.pth`` to ``out_dir``; returns ``{'max_diff', 'backbones'}``."""
    cfg, model, _ = load_trained(config, checkpoint, cfg_options)
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(getattr(vars(m).get('peft'), 'method', None), TaskConditionedAdapters)
             and not isinstance(m.peft.method, TaskAdapters)]
    if not found:
        raise ValueError(f'{config}: the model has no Hyperformer / Polyhistor / PolyhistorLite backbone to export')
    new_cfg = copy.deepcopy(cfg)
    state = {}
    for name, backbone in found:
        method_cfg, sub = export_task_adapters(backbone)
        _replace_method(_cfg_at(new_cfg, name), method_cfg)
        state.update({f'{name}.{k}' if name else k: v for k, v in sub.items()})
    names = [n for n, _ in found]
    inside = lambda k: any(not n or k.startswith(n + '.') for n in names)  # noqa: E731  (already exported)
    state.update({k: v for k, v in model.state_dict().items() if not inside(k)})
    exported = MODELS.build(new_cfg.model)
    exported.load_state_dict(state, strict=True)  # every tensor accounted for

    # the same features for every task
    torch.manual_seed(0)
    x = torch.randn(2, 3, image_size, image_size)
    worst = 0.0
    model.eval(), exported.eval()
    with torch.no_grad():
        for name, backbone in found:
            other = exported.get_submodule(name) if name else exported
            a, b = backbone.peft.forward_tasks(x), other.peft.forward_tasks(x)
            for t in a:
                for u, v in zip(a[t], b[t]):
                    worst = max(worst, float((u - v).abs().max()))
    if worst > atol:
        raise RuntimeError(f'the exported adapters differ from the hyper-networks by {worst:.2e} > atol={atol}')
    os.makedirs(out_dir, exist_ok=True)
    tmp = osp.join(out_dir, f'.{WEIGHTS}.tmp')
    torch.save(dict(state_dict=exported.state_dict(), meta=dict(exported_from=osp.abspath(checkpoint))), tmp)
    os.replace(tmp, osp.join(out_dir, WEIGHTS))
    new_cfg.dump(osp.join(out_dir, 'config.py'))
    return dict(max_diff=worst, backbones=[n for n, _ in found])


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description='Export hyper-network adapters as plain per-task adapters')
    p.add_argument('config', help='training config')
    p.add_argument('checkpoint', help='trained checkpoint (full or mmpeft delta)')
    p.add_argument('out_dir', help=f'folder to write config.py and {WEIGHTS} to')
    p.add_argument('--atol', type=float, default=1e-5, help='largest feature difference allowed')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = p.parse_args(argv)
    out = export(args.config, args.checkpoint, args.out_dir, args.cfg_options, atol=args.atol)
    print(f'wrote {osp.join(args.out_dir, "config.py")} and {osp.join(args.out_dir, WEIGHTS)}: backbone(s) '
          f'{out["backbones"]} as plain per-task adapters; largest feature difference {out["max_diff"]:.2e}')


if __name__ == '__main__':
    main()
