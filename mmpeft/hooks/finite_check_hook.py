"""FiniteCheckHook: stop a run at the first non-finite loss, and never save non-finite weights."""
import math
from typing import Dict, List, Optional

import torch
from mmdet.engine.hooks import CheckInvalidLossHook
from mmengine.dist import all_reduce, is_distributed
from mmengine.runner import EpochBasedTrainLoop

from ..registry import HOOKS


def _non_finite(value) -> bool:
    return not bool(torch.isfinite(torch.as_tensor(value)).all())


@HOOKS.register_module()
class FiniteCheckHook(CheckInvalidLossHook):
    """mmdet's ``CheckInvalidLossHook``, made to stop the run with a message that says what to fix.

    A NaN / Inf loss otherwise trains on silently: every later step and every saved checkpoint
    holds NaN weights, and the run exits 0. The parent checks ``outputs['loss']`` with an
    ``assert`` (gone under ``python -O``, message ``None``) every 50 iterations; this hook checks
    every loss term every ``interval`` (default 1: the loss is already computed, so it is free) and
    raises :class:`FloatingPointError` naming the iteration (and epoch), the non-finite ``loss*``
    terms with their values, the learning rate, non-finite input images of the batch and the
    likely fixes. Under DDP the ranks agree (one small all-reduce), so no rank is left waiting.

    Its priority (``LOW``) runs it after ``LoggerHook`` has logged the bad iteration and before
    ``CheckpointHook`` (``VERY_LOW``) could save it. It also refuses any checkpoint whose
    ``state_dict`` holds a non-finite floating tensor (``before_save_checkpoint``; with
    ``DeltaCheckpointHook`` before or after it, whatever is about to be written is checked).

    Example::

        custom_hooks = [dict(type='FiniteCheckHook')]

    Args:
        interval: check the losses every ``interval`` training iterations.
        check_checkpoint: refuse to save checkpoints with non-finite tensors.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1, check_checkpoint: bool = True) -> None:
        if interval < 1:
            raise ValueError(f'FiniteCheckHook: interval must be >= 1, got {interval}')
        super().__init__(interval=interval)
        self.check_checkpoint = check_checkpoint

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        # the terms mmengine's parse_losses sums into the loss that is back-propagated
        bad = {k: float(torch.as_tensor(v).detach().float().mean()) for k, v in outputs.items()
               if 'loss' in k and _non_finite(v)}
        if is_distributed():
            flag = torch.tensor([float(bool(bad))], device=torch.as_tensor(outputs['loss']).device)
            all_reduce(flag)
            if flag.item() and not bad:
                bad = {'(on another rank)': math.nan}
        if bad:
            raise FloatingPointError(self._message(runner, batch_idx, data_batch, bad))

    @staticmethod
    def _message(runner, batch_idx: int, data_batch: Optional[dict], bad: Dict[str, float]) -> str:
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where = f'epoch {runner.epoch + 1}, {where} (batch {batch_idx + 1} of the epoch)'
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        lrs = {k[len('train/'):]: v.current() for k, v in runner.message_hub.log_scalars.items()
               if k.startswith('train/') and k.endswith('lr')}
        lr = ', '.join(f'{k}={v:g}' for k, v in lrs.items()) or 'unknown'
        msg = (f'FiniteCheckHook: non-finite loss at {where}: {terms}. Training stopped; no checkpoint '
               f'of this step is saved. Likely fixes: lower the learning rate (now {lr}: '
               f'optim_wrapper.optimizer.lr) or clip gradients (optim_wrapper.clip_grad=dict(max_norm=1.0)); '
               f'check the data of this batch for NaN / Inf pixels or out-of-range labels')
        paths = _image_paths(data_batch)
        if paths:
            msg += f' (images: {paths})'
        bad_inputs = _non_finite_inputs(data_batch)
        if bad_inputs:
            msg += f'; input images {bad_inputs} of this batch contain NaN / Inf values'
        scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
        if scaler is not None:
            msg += (f'; with mixed precision use a dynamic loss scale (optim_wrapper.loss_scale='
                    f"'dynamic', now {scaler.get_scale()}) or train in float32")
        return msg + '.'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoint:
            return
        bad = [k for k, v in checkpoint.get('state_dict', {}).items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and _non_finite(v)]
        if bad:
            more = f' ... and {len(bad) - 5} more' if len(bad) > 5 else ''
            raise FloatingPointError(
                f'FiniteCheckHook: refusing to save a checkpoint at iteration {runner.iter + 1}: '
                f'{len(bad)} tensors of the state_dict hold NaN / Inf values: {bad[:5]}{more}. The '
                f'weights diverged: lower the learning rate or clip gradients, check the data for '
                f'NaN / Inf values, and resume from the last finite checkpoint.')


def _image_paths(data_batch: Optional[dict]) -> List[str]:
    samples = (data_batch or {}).get('data_samples') or []
    return [s.metainfo['img_path'] for s in samples
            if hasattr(s, 'metainfo') and 'img_path' in s.metainfo]


def _non_finite_inputs(data_batch: Optional[dict]) -> List[int]:
    """Indices of the batch's images with NaN / Inf pixels (only float images can hold them)."""
    inputs = (data_batch or {}).get('inputs')
    if isinstance(inputs, torch.Tensor):
        inputs = list(inputs)
    if not isinstance(inputs, (list, tuple)):
        return []
    return [i for i, x in enumerate(inputs)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and _non_finite(x)]
