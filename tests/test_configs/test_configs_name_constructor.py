"""Every mmpeft config names ``TrainableOnlyOptimWrapperConstructor`` (issue #11).

``import mmpeft`` makes mmengine's default optimizer-wrapper constructor leave frozen parameters out
(the ``optimizer_drops_frozen`` fix of :mod:`mmpeft.utils.compat`, which ``MMPEFT_DISABLE_FIXES`` switches
off). The configs name the registered constructor so that their optimizer holds only the trainable
parameters with or without that global fix. Checked here: every full config (each ``.py`` under
``configs/`` outside a ``_base_`` folder) resolves to the constructor, and for each distinct
``optim_wrapper`` of those configs, with the global fix off, mmengine's ``build_optim_wrapper`` gives an
optimizer of exactly the trainable parameters of a small model, where the default constructor (the key
removed) gives it the frozen ones too.
"""
import copy
import functools
import glob
import json
import os.path as osp
from typing import Dict, List

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmpeft  # noqa: F401  (registers the constructor and the mmpeft:: prefix the configs need)
from mmpeft.utils import compat

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')
CONSTRUCTOR = 'TrainableOnlyOptimWrapperConstructor'
FIX = 'optimizer_drops_frozen'


def full_configs() -> List[str]:
    """Paths relative to the repository root of every config under configs/ that is not a base."""
    paths = glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    return sorted(osp.relpath(p, ROOT) for p in paths if '_base_' not in osp.relpath(p, CONFIG_DIR).split(osp.sep))


CONFIGS = full_configs()


@pytest.fixture(scope='module')
def loaded() -> Dict[str, Config]:
    """Every full config, read once.

    mmengine re-reads and re-parses each toolbox's model-index and metafiles (hundreds of YAML files) and
    reloads pkg_resources for every ``mmdet::`` / ``mmseg::`` / ``mmpretrain::`` base it resolves: 0.4 s
    a config, 45 s for all. Both are pure look-ups of installed, unchanging files, so they are memoised
    while the configs load (5 s for all).
    """
    import mmengine.config.config as config_module
    import mmengine.config.utils as config_utils

    original_load = config_utils.load
    parsed = {}

    def load(file, *args, **kwargs):
        if args or kwargs or not isinstance(file, str):
            return original_load(file, *args, **kwargs)
        if file not in parsed:
            parsed[file] = original_load(file)
        return parsed[file]  # read, never changed, by mmengine's metafile search

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config_utils, 'load', load)
        mp.setattr(config_module, 'is_installed', functools.lru_cache(maxsize=None)(config_module.is_installed))
        return {path: Config.fromfile(osp.join(ROOT, path)) for path in CONFIGS}


def test_the_enumeration_finds_every_counted_config():
    # configs/param_counts.json lists the configs whose parameters are pinned: a glob missing them is broken
    with open(osp.join(CONFIG_DIR, 'param_counts.json')) as f:
        counted = {key.split(' ')[0] for key in json.load(f)['counts']}  # 'path' or 'path option=value'
    assert counted <= set(CONFIGS), sorted(counted - set(CONFIGS))
    assert len(CONFIGS) >= 100


@pytest.mark.parametrize('path', CONFIGS)
def test_config_names_the_trainable_only_constructor(loaded, path):
    constructor = loaded[path].optim_wrapper.get('constructor')
    assert constructor == CONSTRUCTOR, (
        f"{path}: optim_wrapper.constructor is {constructor!r}; set constructor='{CONSTRUCTOR}' in its "
        'optim_wrapper (or in the mmpeft base it inherits it from; an optim_wrapper with _delete_=True '
        'drops what the bases set)')


@pytest.fixture
def global_fix_off():
    """mmengine's own default constructor for the test, the fixes in effect before restored after."""
    before = compat.applied()
    if FIX in before:
        compat.revert(FIX)
    try:
        yield
    finally:
        compat.apply(disabled=[f.name for f in compat.FIXES if f.name not in before])
        assert compat.applied() == before


def distinct_optim_wrappers(loaded: Dict[str, Config]) -> Dict[str, tuple]:
    """One (config path, default scope, optim_wrapper dict) per distinct optim_wrapper of the configs."""
    out = {}
    for path, cfg in loaded.items():
        ow = cfg.optim_wrapper.to_dict()
        out.setdefault(json.dumps(ow, sort_keys=True, default=str), (path, cfg.get('default_scope'), ow))
    return out


def held(model: nn.Module, optim_wrapper: dict, scope: str) -> List[int]:
    """ids of the tensors the optimizer built by mmengine's ``build_optim_wrapper`` holds, under the config's
    default scope as the Runner builds it."""
    from mmengine.optim import build_optim_wrapper
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, copy.deepcopy(optim_wrapper))
    return sorted(id(p) for g in wrapper.optimizer.param_groups for p in g['params'])


def test_named_constructor_keeps_frozen_parameters_out_without_the_global_fix(loaded, global_fix_off):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # weights + biases: 4 tensors
    model[0].requires_grad_(False)
    trainable = sorted(id(p) for p in model[1].parameters())
    everything = sorted(id(p) for p in model.parameters())
    assert len(trainable) == 2 and len(everything) == 4

    cases = distinct_optim_wrappers(loaded)
    key_matters = 0
    for path, scope, ow in cases.values():
        if ow.get('type') == 'AmpOptimWrapper':  # needs a GPU; the constructor is the same for either wrapper
            ow = dict(ow, type='OptimWrapper')
            ow.pop('loss_scale', None)
        assert held(model, ow, scope) == trainable, path
        default = {k: v for k, v in ow.items() if k != 'constructor'}
        if 'paramwise_cfg' in ow:
            # mmengine's parameter-wise path already skips frozen tensors (one warning each)
            assert held(model, default, scope) == trainable, path
        else:
            assert held(model, default, scope) == everything, path
            key_matters += 1
    # the polyhistor / baseline multi-task schedules, the demos, VTAB-1k and FGVC have no paramwise_cfg
    assert key_matters >= 5, (key_matters, len(cases))
