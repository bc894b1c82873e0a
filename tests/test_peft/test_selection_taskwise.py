"""BitFit and relative-bias tuning: single-task behaviour unchanged, task-wise deltas for the
multi-task benchmark, and Polyhistor's counts (Table 1) on Swin-T with 4 tasks."""
import pytest
import torch
from peft_checks import (
    TASKS,
    build,
    check_step,
    encoder_trainable_millions,
    images,
    max_diff,
    outputs,
    perturb,
)


def test_single_task_bitfit_trains_the_biases_themselves():
    peft, _ = build('swin', dict(type='BitFit'))
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith('.bias') for n in trainable)
    assert 'patch_embed.projection.bias' in trainable and 'stages.0.downsample.norm.bias' in trainable
    assert 'forward' not in peft.__dict__ and not peft.peft.injected  # nothing injected
    with_tables, _ = build('swin', dict(type='BitFit', relative_position_bias=True))
    extra = {n for n, p in with_tables.named_parameters() if p.requires_grad} - set(trainable)
    assert extra and all(n.endswith('relative_position_bias_table') for n in extra)


def test_task_wise_bitfit_equals_tuning_the_bias():
    """bias + delta_t computes what a backbone whose bias was moved by delta_t computes."""
    peft, plain = build('swin', dict(type='BitFit', relative_position_bias=True, num_tasks=2))
    perturb(peft)
    with torch.no_grad():
        for name in peft.peft.injected:
            owner, _, kind = name.rpartition('.')
            delta = peft.get_submodule(name).delta[1]
            target = plain.get_submodule(owner)
            if kind == 'task_bias':
                target.bias.add_(delta)
            else:
                target.relative_position_bias_table.add_(delta)
        x = images('swin')
        assert max_diff(outputs(peft, x, 1), outputs(plain, x)) < 1e-5


def test_vit_task_wise_bitfit_and_relbias_error():
    peft, plain = build('timm_vit', dict(type='BitFit', num_tasks=2))
    check_step(peft, images('timm_vit'), 2)
    with pytest.raises(ValueError, match='relative_position_bias_table'):
        build('timm_vit', dict(type='RelativePositionBias', num_tasks=2))


def test_counts_swin_t_4_tasks():
    """Table 1: BitFit 0.30 (biases 0.21 + relative position tables 0.09), relative bias 0.09."""
    bitfit = encoder_trainable_millions(dict(type='BitFit', relative_position_bias=True, tasks=TASKS))
    assert abs(bitfit / 0.30 - 1) < 0.05
    assert abs(encoder_trainable_millions(dict(type='RelativePositionBias', tasks=TASKS)) / 0.09 - 1) < 0.05
    biases_only = encoder_trainable_millions(dict(type='BitFit', tasks=TASKS))
    assert abs(biases_only - 0.2116) < 0.001
