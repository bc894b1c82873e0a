"""Train with any mmdet / mmseg / mmpretrain / mmpeft config through the MMEngine runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [same options]

mmpeft is imported first, so its classes and compatibility fixes are in place even when a config
lacks ``custom_imports``. The work dir is locked for the run (a second training there stops at once),
temporary files of an interrupted save are removed, and two hooks are added when the config lacks
them: ``ExactResumeHook`` (``--resume`` continues exactly where the interrupted run was) and
``FiniteCheckHook`` (a NaN / Inf loss stops the run naming the iteration and the loss terms, and no
checkpoint with non-finite weights is written).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmpeft  # noqa: F401  (registers classes, applies fixes)
from mmpeft.hooks import ExactResumeHook, FiniteCheckHook
from mmpeft.utils.checkpoint_io import TRUSTED_ENV
from mmpeft.utils.runner_cfg import load_runner_config
from mmpeft.utils.work_dir import clean_stale_temporary_files, lock_work_dir


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a model (mmpeft)')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in work_dir when no CKPT is given')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--no-validate', action='store_true', help='skip validation during training')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
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


def build_cfg(args: argparse.Namespace) -> Config:
    cfg = load_runner_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp and get_device() == 'cpu':
        # mmengine's AmpOptimWrapper would fail later with a bare assertion
        raise RuntimeError('--amp (mixed precision through torch.cuda.amp) needs a GPU (CUDA, NPU, MLU or '
                           'MUSA device) and this machine has none: drop --amp to train in float32')
    if args.amp and cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume) and not osp.isdir(args.resume):  # a folder: Runner.resume says what it is
            raise FileNotFoundError(f'checkpoint to resume from {args.resume} does not exist')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    hooks = list(cfg.get('custom_hooks') or [])
    for default in (ExactResumeHook, FiniteCheckHook):
        if not any(h.get('type') in (default.__name__, default) for h in hooks):
            hooks.append(dict(type=default.__name__))
    cfg.custom_hooks = hooks
    return cfg


def _global_rank() -> int:
    """This process's rank from the launcher's environment (before torch.distributed starts)."""
    for var in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(var, '').isdigit():
            return int(os.environ[var])
    return 0


def main() -> None:
    args = parse_args()
    cfg = build_cfg(args)
    work_dir_lock = None
    if _global_rank() == 0:  # one lock per training, held by its main process until it exits
        work_dir_lock = lock_work_dir(cfg.work_dir)
        clean_stale_temporary_files(cfg.work_dir)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()
    if work_dir_lock is not None:
        work_dir_lock.close()


if __name__ == '__main__':
    main()
