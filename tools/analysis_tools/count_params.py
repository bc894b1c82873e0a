"""Trainable / total parameters of a config's model, the way the papers' tables print them.

    python tools/analysis_tools/count_params.py CONFIG [--cfg-options k=v ...]
    python tools/analysis_tools/count_params.py CONFIG_DIR [--recursive]   # markdown comparison table

The model is built exactly as training builds it (PEFT methods injected, frozen at build time), with
random weights: no checkpoint is read. Numbers are in millions with two decimals.
"""
import argparse
import glob
import os.path as osp
import sys
from typing import Dict, List, Tuple

import mmpeft  # noqa: F401
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

from mmpeft.utils.param_count import count_params, format_param_table, millions


def model_counts(config: str, cfg_options: dict = None) -> Dict[str, Dict[str, int]]:
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
    model = MODELS.build(model_cfg)
    return count_params(model)


def folder_table(folder: str, recursive: bool = False) -> str:
    pattern = osp.join(folder, '**', '*.py') if recursive else osp.join(folder, '*.py')
    rows: List[Tuple[str, str, str, str]] = []
    for config in sorted(glob.glob(pattern, recursive=recursive)):
        # bases are not rows: skip `_`-prefixed files and anything under a `_base_`-style folder
        if any(part.startswith('_') for part in osp.relpath(config, folder).split(osp.sep)):
            continue
        try:
            c = model_counts(config)
        except Exception as e:  # one broken config must not hide the others' counts
            rows.append((osp.relpath(config, folder), 'error', 'error', f'{type(e).__name__}: {e}'[:80]))
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
    args = p.parse_args()
    if osp.isdir(args.config):
        print(folder_table(args.config, args.recursive))
    else:
        print(format_param_table(model_counts(args.config, args.cfg_options),
                                 f'Parameters of {osp.basename(args.config)}:'))


if __name__ == '__main__':
    sys.exit(main())
