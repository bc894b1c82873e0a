"""ExactResumeHook: an interrupted training resumed from a checkpoint continues bit-identically."""
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from ..registry import HOOKS

RNG_KEY = 'mmpeft_rng_state'


def get_rng_state() -> Dict[str, Any]:
    """The python ``random``, numpy, torch CPU (and CUDA, when present) generator states."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class _RestoreAfterSkip:
    """Wraps the loop's data iterator: restores the RNG state right before the first new batch.

    mmengine's ``IterBasedTrainLoop.run`` replays ``iter`` batches after a resume to move the
    sampler on; with ``num_workers=0`` that replay runs the data pipeline (random augmentation) in
    this process. The saved state must be restored after the replay and before the next batch is
    drawn, and no hook runs between the two.
    """

    def __init__(self, iterator, skip: int, state: Dict[str, Any]):
        self._iterator, self._skip, self._state = iterator, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0 and self._state is not None:
            set_rng_state(self._state)
            self._state = None
        self._skip -= 1
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save the random-number generator states in every checkpoint and restore them on resume.

    Why: without them, a run killed and resumed draws other dropout masks and augmentations than
    the uninterrupted run, so the two diverge (by ~1e-3 after a few iterations). The sampler's
    position needs nothing extra: mmengine's samplers are seeded and the loop replays the seen
    batches. The states go under their own top-level checkpoint key (``mmpeft_rng_state``), so
    delta checkpoints keep them too. Harmless without resume: a ``load_from`` (fine-tuning from a
    checkpoint, iteration 0) restores nothing. ``tools/train.py`` adds the hook when a config lacks it.

    Under DDP only rank 0 saves checkpoints, so every rank restores rank 0's states: exact when the
    ranks' generators agree (``randomness.diff_rank_seed=False``, the default).
    """

    priority = 'VERY_LOW'  # restore after other hooks' before_train (any random draws there)

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None
        self._pending_at: Optional[tuple] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._pending = checkpoint.get(RNG_KEY)
        self._pending_at = (meta.get('iter'), meta.get('epoch'))

    def before_train(self, runner) -> None:
        state, self._pending = self._pending, None
        resumed = self._pending_at == (runner.iter, runner.epoch) and (runner.iter or runner.epoch)
        if state is None or not resumed:
            if resumed:
                runner.logger.warning('ExactResumeHook: the checkpoint resumed from holds no random '
                                      'number states (saved without this hook); the run continues, '
                                      'but not bit-identically to an uninterrupted one')
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator') and runner.iter > 0:  # IterBasedTrainLoop
            loop.dataloader_iterator = _RestoreAfterSkip(loop.dataloader_iterator, runner.iter, state)
        else:  # EpochBasedTrainLoop: the next epoch's iterator is made after this hook
            set_rng_state(state)
        runner.logger.info('ExactResumeHook: random number states of the checkpoint restored')
