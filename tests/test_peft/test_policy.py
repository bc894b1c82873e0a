import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

from mmpeft.peft.policy import (
    apply_trainable,
    frozen_norm_and_dropout_modules,
    keep_in_eval,
    match_names,
    restrict_optimizer,
)

TINY_SWIN = dict(type='SwinTransformer', pretrain_img_size=32, embed_dims=16, depths=(1, 1, 2, 1),
                 num_heads=(1, 2, 2, 4), window_size=4, out_indices=(0, 1, 2, 3))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Dropout(0.5), nn.Linear(8, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_apply_trainable_exact_set():
    m = Toy()
    enabled = apply_trainable(m, ['head', r'backbone\.1\.'])
    assert enabled == ['backbone.1.weight', 'backbone.1.bias', 'head.weight', 'head.bias']
    assert {n for n, p in m.named_parameters() if p.requires_grad} == set(enabled)
    m(torch.randn(3, 4)).sum().backward()
    for n, p in m.named_parameters():
        assert (p.grad is not None) == (n in enabled), n


def test_apply_trainable_frozen_subtracts():
    m = Toy()
    enabled = apply_trainable(m, ['.*'], frozen=[r'.*\.bias$'])
    assert all(n.endswith('weight') for n in enabled) and len(enabled) == 4


def test_pattern_matching_nothing_names_the_pattern():
    with pytest.raises(ValueError, match=r"\['nekc'\]"):
        apply_trainable(Toy(), ['head', 'nekc'])


def test_invalid_regex_is_reported():
    with pytest.raises(ValueError, match='not a valid regular expression'):
        match_names(['a'], ['('])


def test_empty_trainable_set_is_an_error_unless_allowed():
    with pytest.raises(ValueError, match='empty'):
        apply_trainable(Toy(), [])
    assert apply_trainable(Toy(), [], allow_empty=True) == []


def test_keep_in_eval_survives_train():
    m = Toy()
    apply_trainable(m, ['head'])
    names = frozen_norm_and_dropout_modules(m)
    assert names == ['backbone.1', 'backbone.2']
    keep_in_eval(m, names)
    m.train()
    x = torch.randn(2, 4)
    out1, out2 = m(x), m(x)
    assert torch.equal(out1, out2)  # dropout off although the model is in train mode
    assert not m.backbone[2].training and m.head.training


def test_restrict_optimizer_keeps_groups():
    m = Toy()
    opt = torch.optim.SGD([dict(params=m.backbone.parameters()), dict(params=m.head.parameters(), lr=1)],
                          lr=0.1)
    apply_trainable(m, ['head'])
    assert restrict_optimizer(opt) == 6
    assert len(opt.param_groups) == 2 and opt.param_groups[0]['params'] == []
    assert len(opt.param_groups[1]['params']) == 2


def _build_peft(method, **kw):
    init_default_scope('mmseg')
    return MODELS.build(dict(type='PEFTBackbone', backbone=TINY_SWIN, method=method, **kw))


def test_peft_backbone_keeps_plain_keys_and_freezes():
    init_default_scope('mmseg')
    plain = MODELS.build(TINY_SWIN)
    m = _build_peft(dict(type='BitFit'))
    assert type(m) is type(plain)
    assert list(m.state_dict()) == list(plain.state_dict())  # checkpoints of the plain backbone load
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith('bias') for n in trainable)
    # patch embedding and patch merging biases are part of BitFit on Swin
    assert any(n.startswith('patch_embed.') for n in trainable)
    assert any('downsample' in n for n in trainable)
    n_bias = sum(p.numel() for n, p in plain.named_parameters() if n.endswith('bias'))
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == n_bias


def test_peft_backbone_gradients_and_optimizer_only_trainable():
    m = _build_peft(dict(type='LNTuning'))
    m.init_weights()  # must not change the trainable set
    declared = {n for n, p in m.named_parameters() if p.requires_grad}
    assert declared and all('norm' in n for n in declared)
    outs = m(torch.randn(2, 3, 32, 32))
    sum(o.mean() for o in outs).backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None}
    assert got == declared
    wrapper = build_optim_wrapper(m, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    held = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert held == {id(p) for n, p in m.named_parameters() if n in declared}


def test_peft_backbone_relative_position_bias_and_full():
    m = _build_peft(dict(type='RelativePositionBias'))
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all(n.endswith('relative_position_bias_table') for n in names)
    full = _build_peft(None)
    assert all(p.requires_grad for p in full.parameters())
    probe = _build_peft(dict(type='FrozenBackbone'))
    assert not any(p.requires_grad for p in probe.parameters())


def test_peft_backbone_extra_trainable_and_bad_pattern():
    m = _build_peft(dict(type='FrozenBackbone'), extra_trainable=[r'stages\.3\.'])
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all(n.startswith('stages.3.') for n in names)
    with pytest.raises(ValueError, match='stagez'):
        _build_peft(dict(type='FrozenBackbone'), extra_trainable=['stagez'])


def test_peft_backbone_frozen_norms_stay_eval():
    m = _build_peft(dict(type='BitFit'))
    m.train()
    m(torch.randn(1, 3, 32, 32))
    # BitFit trains the norms' biases, so they are not "frozen" modules; dropouts are
    drops = [mod for n, mod in m.named_modules() if isinstance(mod, nn.Dropout)]
    assert drops and all(not d.training for d in drops)


def test_peft_backbone_deepcopy_inits_the_copy():
    import copy
    m = _build_peft(dict(type='BitFit'))
    c = copy.deepcopy(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    c.init_weights()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # original untouched
    assert [n for n, p in c.named_parameters() if p.requires_grad] == m.peft.trainable
