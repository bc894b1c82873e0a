"""Evaluate a checkpoint (full or mmpeft delta) with any toolbox config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [same options]

A delta checkpoint (trainable parameters only) is expanded to base + delta when loaded. The
checkpoint must fit the model exactly (missing / unexpected keys are an error, not metrics of a
half-loaded model); ``--non-strict`` loads only the keys that match.
"""
import argparse
import os
import os.path as osp

import mmpeft  # noqa: F401  (registers classes, applies fixes)
from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmpeft.utils.checkpoint_io import TRUSTED_ENV, strict_model_loading
from mmpeft.utils.runner_cfg import load_runner_config


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Test a model (mmpeft)')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file (full or delta)')
    p.add_argument('--work-dir', help='where logs and metrics go')
    p.add_argument('--out', help='dump the metrics (json) to this file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    p.add_argument('--non-strict', action='store_true',
                   help='load only the checkpoint keys that match the model; the rest keep their initial values')
    p.add_argument('--trust-checkpoints', action='store_true',
                   help=f'load checkpoints with weights_only=False (they may run code; same as {TRUSTED_ENV}=1)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.trust_checkpoints:
        os.environ[TRUSTED_ENV] = '1'
    return args


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint file {args.checkpoint} does not exist')
    cfg = load_runner_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if args.non_strict:
        metrics = runner.test()
    else:
        fix = ('Test with the config this checkpoint was trained with, or pass --non-strict to load only the '
               'matching keys (the others keep their initial values, so the metrics are not those of the checkpoint)')
        with strict_model_loading(args.checkpoint, fix):
            metrics = runner.test()
    if args.out and is_main_process():
        import json
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({k: float(v) if hasattr(v, '__float__') else v for k, v in metrics.items()}, f, indent=2)
    print('\n'.join(f'{k}: {v}' for k, v in metrics.items()))


if __name__ == '__main__':
    main()
