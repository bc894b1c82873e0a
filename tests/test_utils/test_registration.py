"""mmpeft's classes resolve unprefixed from each toolbox's default scope."""
import pytest
from mmengine.registry import DATASETS, HOOKS, MODELS, DefaultScope


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_unprefixed_lookup_from_each_toolbox(scope):
    import importlib
    registry_mod = importlib.import_module(f'{scope}.registry')
    with DefaultScope.overwrite_default_scope(scope):
        for name in ('PEFTBackbone',):
            assert registry_mod.MODELS.get(name) is MODELS.get(name) is not None
        for name in ('PEFTFreezeHook', 'TrainableParamsHook', 'DeltaCheckpointHook'):
            assert registry_mod.HOOKS.get(name) is HOOKS.get(name) is not None
        assert registry_mod.DATASETS.get('SyntheticSegDataset') is DATASETS.get('SyntheticSegDataset')


def test_peft_methods_build_under_any_scope():
    from mmpeft.registry import PEFT_METHODS
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        with DefaultScope.overwrite_default_scope(scope):
            assert type(PEFT_METHODS.build(dict(type='BitFit'))).__name__ == 'BitFit'
