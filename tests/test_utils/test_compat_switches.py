"""The import-time fixes are named, listed in one log line, and can be switched off one by one."""
import subprocess
import sys

import pytest

from mmpeft_testing import ROOT

NAMES = ['safe_checkpoint_load', 'atomic_writes', 'resume_fallback', 'delta_checkpoints',
         'optimizer_drops_frozen', 'cpu_ddp', 'cpu_dist_init']

# for each fix: a probe printing whether mmengine's function is still its own (True = untouched)
PROBE = r'''
import mmpeft  # noqa
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import checkpoint_hook
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.runner import checkpoint as ckpt_mod, runner as runner_mod
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.dist import utils as dist_utils
import torch
own = {
    'safe_checkpoint_load': ckpt_mod.torch is torch,
    'atomic_writes': LocalBackend.put.__module__.startswith('mmengine'),
    'resume_fallback': runner_mod.find_latest_checkpoint.__module__.startswith('mmengine')
                       and 'open' not in vars(checkpoint_hook),
    'delta_checkpoints': CheckpointLoader.load_checkpoint.__func__.__module__.startswith('mmengine')
                         and runner_mod._load_checkpoint_to_model.__module__.startswith('mmengine')
                         and not hasattr(runner_mod._load_checkpoint_to_model, '__wrapped__'),
    'optimizer_drops_frozen': not hasattr(DefaultOptimWrapperConstructor.__call__, '__wrapped__'),
    'cpu_ddp': not hasattr(MMDistributedDataParallel.__init__, '__wrapped__'),
    'cpu_dist_init': not hasattr(dist_utils._init_dist_pytorch, '__wrapped__'),
}
print('OWN', sorted(k for k, v in own.items() if v))
'''


def _run(env_value=None):
    import os
    env = dict(os.environ)
    env.pop('MMPEFT_DISABLE_FIXES', None)
    if env_value is not None:
        env['MMPEFT_DISABLE_FIXES'] = env_value
    return subprocess.run([sys.executable, '-c', PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _own(res) -> list:
    line = [ln for ln in res.stdout.splitlines() if ln.startswith('OWN')][-1]
    return eval(line[4:])


def test_all_fixes_listed_in_one_line_and_each_switched_off_by_name():
    res = _run()
    assert res.returncode == 0, res.stderr[-2000:]
    assert _own(res) == []
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if 'mmpeft changes mmengine' in ln]
    assert len(lines) == 1 and all(n in lines[0] for n in NAMES) and 'MMPEFT_DISABLE_FIXES' in lines[0]
    # one by one in one process each would cost ~10 s apiece; two names per process, every name once
    for pair in (NAMES[0:2], NAMES[2:4], NAMES[4:6], NAMES[6:]):
        res = _run(','.join(pair))
        assert res.returncode == 0, res.stderr[-2000:]
        assert _own(res) == sorted(pair), pair
        line = [ln for ln in (res.stdout + res.stderr).splitlines() if 'mmpeft changes mmengine' in ln][0]
        assert f'(off: {", ".join(pair)})' in line and not any(f' {n},' in line.split('(off')[0] for n in pair)


def test_unknown_name_is_an_error_listing_the_known_ones():
    res = _run('optimizer_drops_frozen,atomic_write')
    assert res.returncode != 0
    assert "unknown fix name(s) ['atomic_write']" in res.stderr and 'atomic_writes' in res.stderr


def test_revert_restores_mmengine_and_apply_brings_it_back():
    from mmengine.optim import DefaultOptimWrapperConstructor

    from mmpeft.utils import compat
    patched = DefaultOptimWrapperConstructor.__call__
    compat.revert('optimizer_drops_frozen')
    try:
        assert 'optimizer_drops_frozen' not in compat.applied()
        assert not hasattr(DefaultOptimWrapperConstructor.__call__, '__wrapped__')
        with pytest.raises(KeyError, match='not in effect'):
            compat.revert('optimizer_drops_frozen')
    finally:
        assert compat.apply() == ['optimizer_drops_frozen']
    assert hasattr(DefaultOptimWrapperConstructor.__call__, '__wrapped__')
    assert DefaultOptimWrapperConstructor.__call__ is not patched  # a fresh wrapper of the original
    assert DefaultOptimWrapperConstructor.__call__.__wrapped__ is patched.__wrapped__


def test_trainable_only_constructor_works_without_the_global_fix():
    """With the global fix off, mmengine's default constructor hands frozen tensors to the optimizer;
    the registered constructor a config names still leaves them out."""
    import torch.nn as nn
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

    from mmpeft.utils import compat

    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    cfg = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))

    def held(constructor: str) -> int:
        ctor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=constructor, optim_wrapper_cfg=cfg))
        return sum(p.numel() for g in ctor(model).optimizer.param_groups for p in g['params'])

    compat.revert('optimizer_drops_frozen')
    try:
        assert held('DefaultOptimWrapperConstructor') == 3 * 4 + 4 + 4 * 2 + 2
        assert held('TrainableOnlyOptimWrapperConstructor') == 4 * 2 + 2
    finally:
        compat.apply()
    assert held('DefaultOptimWrapperConstructor') == held('TrainableOnlyOptimWrapperConstructor') == 10
