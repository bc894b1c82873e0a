"""Trainable / total parameters of a config's model, the way the papers' tables print them.

    python tools/analysis_tools/count_params.py CONFIG [--cfg-options k=v ...]
    python tools/analysis_tools/count_params.py CONFIG_DIR [--recursive]   # markdown comparison table
    python tools/analysis_tools/count_params.py CONFIG --device meta       # shapes only: fast, no memory

The model is built exactly as training builds it (PEFT methods injected, frozen at build time), with
random weights: no checkpoint is read. Numbers are in millions with two decimals. ``--device meta``
builds the same modules without allocating or initialising weights (counts need only shapes), which
is what the test pinning every config's count uses to stay fast.
"""
import argparse
import glob
import os.path as osp
import sys
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope
from torch.overrides import TorchFunctionMode

import mmpeft  # noqa: F401
from mmpeft.utils.param_count import count_params, format_param_table, millions


class _LinspaceOnCPU(TorchFunctionMode):
    """Keeps ``torch.linspace`` on the CPU: the toolboxes' Swin turns its drop-path schedule into
    Python floats with ``.item()``, which a meta tensor cannot give."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace and kwargs.get('device') is None:
            kwargs['device'] = 'cpu'
        return func(*args, **kwargs)


@contextmanager
def build_device(device: Optional[str]) -> Iterator[None]:
    """Build modules on ``device`` (None: torch's default, the CPU). On ``'meta'`` parameters have
    shapes but no storage, so even ViT-L detectors build in a second and counts are unchanged."""
    if device is None:
        yield
        return
    meta = torch.device(device).type == 'meta'
    with torch.device(device), (_LinspaceOnCPU() if meta else nullcontext()):
        yield


def config_paths(folder: str, recursive: bool = False) -> List[str]:
    """The configs of a folder that are rows of a table: bases (`_`-prefixed files, or anything under
    a `_base_`-style folder) are not."""
    pattern = osp.join(folder, '**', '*.py') if recursive else osp.join(folder, '*.py')
    return [c for c in sorted(glob.glob(pattern, recursive=recursive))
            if not any(part.startswith('_') for part in osp.relpath(c, folder).split(osp.sep))]


def model_counts(config: str, cfg_options: dict = None,
                 device: Optional[str] = None) -> Dict[str, Dict[str, int]]:
    """``count_params`` of the config's model, built with random weights (or on ``device``)."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'config {config} has no `model`')
    init_default_scope(cfg.get('default_scope', None) or 'mmengine')
    model_cfg = cfg.model
    # pretrained weights are never needed to count; skip reading them
    for key in ('init_cfg', 'pretrained'):
        model_cfg.pop(key, None)
    with build_device(device):
        model = MODELS.build(model_cfg)
    return count_params(model)


def folder_table(folder: str, recursive: bool = False, device: Optional[str] = None) -> str:
    rows: List[Tuple[str, str, str, str]] = []
    for config in config_paths(folder, recursive):
        try:
            c = model_counts(config, device=device)
        except Exception as e:  # one broken config must not hide the others' counts
            msg = ' '.join(f'{type(e).__name__}: {e}'.split()).replace('|', '\\|')  # one table cell
            rows.append((osp.relpath(config, folder), 'error', 'error', msg))
            continue
        enc = c.get('Encoder', dict(trainable=0, total=0))
        rows.append((osp.relpath(config, folder), millions(enc['trainable']),
                     millions(c['All']['trainable']), millions(c['All']['total'])))
    lines = ['| config | Encoder trainable (M) | All trainable (M) | All total (M) |',
             '| --- | ---: | ---: | ---: |']
    lines += [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    return '\n'.join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description='Count trainable parameters of a config (or a folder of configs)')
    p.add_argument('config', help='config file, or a folder of configs')
    p.add_argument('--recursive', action='store_true', help='with a folder: include sub-folders')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    p.add_argument('--device', choices=['cpu', 'meta'], default=None,
                   help='meta: build shapes only (same counts, fast, no memory for the weights)')
    args = p.parse_args()
    if osp.isdir(args.config):
        print(folder_table(args.config, args.recursive, args.device))
    else:
        print(format_param_table(model_counts(args.config, args.cfg_options, args.device),
                                 f'Parameters of {osp.basename(args.config)}:'))


if __name__ == '__main__':
    sys.exit(main())
