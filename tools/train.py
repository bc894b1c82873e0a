"""Train with any mmdet / mmseg / mmpretrain / mmpeft config through the MMEngine runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [same options]

mmpeft is imported first, so its classes and compatibility fixes are in place even when a config
lacks ``custom_imports``.
"""
import argparse
import os
import os.path as osp

import mmpeft  # noqa: F401  (registers classes, applies fixes)
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmpeft.utils.runner_cfg import load_runner_config


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a model (mmpeft)')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in work_dir when no CKPT is given')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--no-validate', action='store_true', help='skip validation during training')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args: argparse.Namespace) -> Config:
    cfg = load_runner_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp and cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'checkpoint to resume from {args.resume} does not exist')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_cfg(args)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
