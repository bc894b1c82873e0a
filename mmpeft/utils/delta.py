"""Trainable-only ("delta") checkpoints: format, validation, and base + delta merging.

A delta checkpoint is an ordinary mmengine checkpoint (``meta``, ``state_dict``, ``optimizer``,
``param_schedulers``, ``message_hub``) whose ``state_dict`` holds only the trainable parameters and
the buffers that differ from the base weights, with ``meta['mmpeft_delta']`` describing the base:

    base:          path of the full base-weights checkpoint (absolute when written)
    frozen_shapes: {key: shape} of every state-dict entry taken from the base
    trainable:     keys of the trainable parameters
    buffers:       keys of the buffers stored because they changed
    version:       format version (1)

Loading = base weights + delta: every key the delta lacks is taken from the base. The base must
hold exactly the recorded frozen keys with the recorded shapes; anything else is an error naming the
keys (a delta never silently lands on weights it was not trained from).
"""
import os.path as osp
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import torch

DELTA_KEY = 'mmpeft_delta'
DELTA_VERSION = 1


def is_delta_checkpoint(checkpoint) -> bool:
    return (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('meta'), Mapping)
            and DELTA_KEY in checkpoint['meta']
            and not checkpoint['meta'][DELTA_KEY].get('expanded', False))


def state_dict_of(checkpoint, name: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint (mmengine ``state_dict``, MAE-style ``model``, or raw)."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{name} is not a dict of weights (got {type(checkpoint).__name__})')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return checkpoint[key]
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise KeyError(f'{name} has no "state_dict" (or "model") entry of weights; '
                   f'its keys are {sorted(checkpoint)[:10]}')


def _preview(keys: Iterable[str], n: int = 10) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - n} more' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def make_delta_meta(base: str, frozen_shapes: Mapping[str, Iterable[int]], trainable: List[str],
                    buffers: List[str]) -> dict:
    return dict(base=base, frozen_shapes={k: list(v) for k, v in frozen_shapes.items()},
                trainable=list(trainable), buffers=list(buffers), version=DELTA_VERSION)


def check_base_fits(base_sd: Mapping[str, torch.Tensor], meta: Mapping, base_name: str,
                    delta_name: str = 'the delta checkpoint') -> None:
    """Raise naming the keys when ``base_sd`` is not the base ``meta`` was trained from.

    Missing: frozen keys the base lacks. Unexpected: base keys that are neither frozen nor in the
    delta. Shape: frozen keys whose shape differs.
    """
    frozen = meta['frozen_shapes']
    known = set(frozen) | set(meta['trainable']) | set(meta['buffers'])
    missing = [k for k in frozen if k not in base_sd]
    unexpected = [k for k in base_sd if k not in known]
    shapes = [f'{k} (base {list(base_sd[k].shape)} vs recorded {frozen[k]})'
              for k in frozen if k in base_sd and list(base_sd[k].shape) != list(frozen[k])]
    problems = []
    if missing:
        problems.append(f'missing keys: {_preview(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_preview(unexpected)}')
    if shapes:
        problems.append(f'shape mismatch: {_preview(shapes)}')
    if problems:
        raise KeyError(f'base weights {base_name} do not fit {delta_name}: ' + '; '.join(problems))


def merge_base_and_delta(base_sd: Mapping[str, torch.Tensor], delta_sd: Mapping[str, torch.Tensor],
                         meta: Mapping, base_name: str = 'base',
                         delta_name: str = 'the delta checkpoint') -> 'OrderedDict[str, torch.Tensor]':
    """Full state dict = base weights with every delta entry replacing the base's (checked first)."""
    check_base_fits(base_sd, meta, base_name, delta_name)
    declared = set(meta['trainable']) | set(meta['buffers'])
    undeclared = [k for k in delta_sd if k not in declared]
    absent = [k for k in declared if k not in delta_sd]
    if undeclared or absent:
        raise KeyError(f'{delta_name} is inconsistent with its own meta: '
                       f'undeclared keys [{_preview(undeclared)}], absent keys [{_preview(absent)}]')
    merged = OrderedDict((k, base_sd[k]) for k in meta['frozen_shapes'])
    for k, v in delta_sd.items():
        merged[k] = v
    return merged


def resolve_base_path(meta: Mapping, delta_path: Optional[str]) -> str:
    """The recorded base path, else a file of the same name beside the delta (moved work_dirs)."""
    base = meta['base']
    if osp.isfile(base):
        return base
    tried = [base]
    if delta_path is not None and not str(delta_path).startswith(('http://', 'https://')):
        beside = osp.join(osp.dirname(osp.abspath(delta_path)), osp.basename(base))
        if osp.isfile(beside):
            return beside
        tried.append(beside)
    raise FileNotFoundError(f'base weights of delta checkpoint {delta_path} not found (tried '
                            f'{", ".join(tried)}); merge with an explicit base: '
                            f'tools/model_converters/merge_delta.py BASE DELTA OUT')


def expand_delta_checkpoint(checkpoint: dict, delta_path: Optional[str] = None,
                            load_fn: Optional[Callable[[str], dict]] = None,
                            base: Optional[str] = None) -> dict:
    """Turn a loaded delta checkpoint into a full one (base + delta); other entries are kept."""
    meta = checkpoint['meta'][DELTA_KEY]
    base_path = base if base is not None else resolve_base_path(meta, delta_path)
    if base is not None and not osp.isfile(base):
        raise FileNotFoundError(f'base weights file {base} does not exist')
    if load_fn is None:
        load_fn = lambda f: torch.load(f, map_location='cpu', weights_only=False)  # noqa: E731
    base_sd = state_dict_of(load_fn(base_path), f'base weights {base_path}')
    merged = merge_base_and_delta(base_sd, checkpoint['state_dict'], meta, base_path,
                                  f'delta checkpoint {delta_path}')
    out = dict(checkpoint)
    out['state_dict'] = merged
    out['meta'] = dict(checkpoint['meta'])
    out['meta'][DELTA_KEY] = dict(meta, expanded=True, base=base_path)
    return out
