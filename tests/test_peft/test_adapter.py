"""Adapters (Houlsby / Pfeiffer, low-rank, shared, AdaptFormer): placement, identity start, step,
trainable set, task-wise behaviour, and Polyhistor's Table 1 / 6 counts on Swin-T with 4 tasks."""
import pytest
import torch
from peft_checks import (
    TASKS,
    build,
    encoder_trainable_millions,
    images,
    max_diff,
    outputs,
    perturb,
)

from mmpeft.peft.layout import find_blocks


def test_adapter_placement_per_block():
    for position, per_block in (('mlp', 1), ('attn', 1), ('both', 2)):
        peft, _ = build('swin', dict(type='Adapter', reduction_ratio=4, position=position))
        blocks = find_blocks(peft)
        assert len(peft.peft.injected) == per_block * len(blocks)
        assert all(n.rsplit('.', 1)[-1] in ('adapter_attn', 'adapter_mlp') for n in peft.peft.injected)


def test_tasks_get_different_outputs_after_training_and_shared_projections():
    peft, _ = build('swin', dict(type='Adapter', reduction_ratio=4, tasks=TASKS[:2]))
    perturb(peft)
    x = images('swin')
    with torch.no_grad():
        a, b = outputs(peft, x, 'semseg'), outputs(peft, x, 'parts')
        assert max_diff(a, b) > 1e-4
        both = peft.peft.forward_tasks(x, ['semseg', 'parts'])
        assert list(both) == ['semseg', 'parts'] and max_diff(list(both['parts']), b) == 0
    with pytest.raises(RuntimeError, match='task='):
        peft(x)
    with pytest.raises(KeyError, match='unknown task'):
        peft(x, task='depth')
    shared, _ = build('swin', dict(type='SharedAdapter', reduction_ratio=4, num_tasks=3))
    adapter = shared.get_submodule(shared.peft.injected[0])
    assert adapter.down.shape[0] == 1 and adapter.norm_weight.shape[0] == 3


def test_adapter_bad_config():
    with pytest.raises(ValueError, match='position'):
        build('swin', dict(type='Adapter', position='ffn'))
    with pytest.raises(ValueError, match='mode'):
        build('swin', dict(type='Adapter', mode='serial'))
    with pytest.raises(ValueError, match='activation'):
        build('swin', dict(type='Adapter', act='tanhh'))
    with pytest.raises(ValueError, match='no hidden unit'):
        build('swin', dict(type='Adapter', reduction_ratio=64))


# Polyhistor Tables 1 and 6 (Swin-T, PASCAL-Context, 4 tasks): Encoder trainable (M)
PAPER = [
    (dict(type='Adapter', reduction_ratio=1), 17.32),
    (dict(type='Adapter', reduction_ratio=2), 8.69),
    (dict(type='Adapter', reduction_ratio=4), 4.37),
    (dict(type='Adapter', reduction_ratio=8), 2.21),
    (dict(type='Adapter', reduction_ratio=16), 1.13),
    (dict(type='LowRankAdapter'), 0.34),
    (dict(type='SharedAdapter', reduction_ratio=1), 4.35),
    (dict(type='SharedAdapter', reduction_ratio=2), 2.20),
    (dict(type='SharedAdapter', reduction_ratio=4), 1.12),
    (dict(type='SharedAdapter', reduction_ratio=8), 0.58),
]


def _row_id(v):
    return f"{v['type']}{v.get('reduction_ratio', '')}" if isinstance(v, dict) else str(v)


@pytest.mark.parametrize('method, paper', PAPER, ids=_row_id)
def test_counts_swin_t_4_tasks(method, paper):
    got = encoder_trainable_millions(dict(method, tasks=TASKS))
    assert abs(got / paper - 1) < 0.05, (got, paper)
