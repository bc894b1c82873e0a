"""PolyhistorSwin (Hyperformer / Polyhistor / Polyhistor-Lite adapters on a frozen mmseg Swin) and
PretrainedSwin's checkpoint loading, on a tiny Swin (width 16, depths (1, 1, 2, 1), window 4, 64x64)."""
import re
from collections import OrderedDict

import pytest
import torch
from mmseg.models.backbones.swin import SwinTransformer

from mmpeft.backbones import PolyhistorSwin, PretrainedSwin
from mmpeft.peft.task_conditioned import resolve_rank

TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
TASKS = ('semseg', 'parts', 'sal', 'normals')
MODES = dict(
    hyperformer=dict(mode='hyperformer', reduction_ratio=4, embed_dims_task=8),
    polyhistor=dict(mode='polyhistor', reduction_ratio=4, rank=2, embed_dims_task=8),
    polyhistor_lite=dict(mode='polyhistor_lite', reduction_ratio=2, rank='n/4', embed_dims_task=8),
)
# what each mode may train (besides the Swin's own LayerNorms)
DECLARED = dict(
    hyperformer=r'task_embeds$|adapters\.stage\d_block\d_(attn|ffn)\.(weight\.weight|vectors\.weight)$',
    polyhistor=r'task_embeds$|adapters\.stage\d_block\d_(attn|ffn)\.(weight\.[pq]|vectors\.weight)$',
    polyhistor_lite=r'task_embeds$|template_hypernet\.[pq]$|'
                    r'adapters\.stage\d_block\d_(attn|ffn)\.(layer_embeds|scaling_kernels|b_down|b_up|gamma|beta)$',
)
SWIN_NORM = r'(patch_embed\.norm|stages\.\d\.blocks\.\d\.norm[12]|stages\.\d\.downsample\.norm|norm\d)\.(weight|bias)$'


def build(mode: str, seed: int = 0, **kwargs) -> PolyhistorSwin:
    torch.manual_seed(seed)
    cfg = dict(MODES[mode], **TINY)
    cfg.update(kwargs)
    model = PolyhistorSwin(**cfg)
    model.init_weights()
    return model


def randomize_zero_init(model: torch.nn.Module) -> None:
    """Give the zero-initialised generated LayerNorm / biases values, so adapters act (identity at init)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture(params=list(MODES))
def mode(request):
    return request.param


def test_output_shapes_per_task(mode):
    model = build(mode)
    x = torch.randn(2, 3, 64, 64)
    out = model.peft.forward_tasks(x)
    assert list(out) == list(TASKS)
    for feats in out.values():
        assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
    assert list(model.peft.forward_tasks(x, ['normals', 'semseg'])) == ['normals', 'semseg']
    assert [tuple(f.shape) for f in model(x, task='sal')] == [tuple(f.shape) for f in out['sal']]


def test_identity_at_init_equals_plain_swin(mode):
    """gamma = beta = 0 at initialisation: the model computes exactly the frozen mmseg Swin."""
    model = build(mode)
    swin = SwinTransformer(**TINY)
    missing, unexpected = swin.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    assert all(re.match(r'(task_embeds|adapters\.|template_hypernet\.)', k) for k in unexpected)
    model.eval(), swin.eval()
    x = torch.randn(2, 3, 64, 64)
    ref = swin(x)
    for feats in model.peft.forward_tasks(x).values():
        for f, r in zip(feats, ref):
            torch.testing.assert_close(f, r, rtol=0, atol=1e-5)


def test_frozen_state_dict_keys_are_mmseg_swin_keys(mode):
    model = build(mode)
    swin_keys = set(SwinTransformer(**TINY).state_dict())
    own = {k for k in model.state_dict() if not model.peft.added_keys.match(k)}
    assert own == swin_keys


def test_gradients_only_on_declared_set(mode):
    model = build(mode)
    randomize_zero_init(model)
    model.train()
    out = model.peft.forward_tasks(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for feats in out.values() for f in feats).backward()
    declared = re.compile(f'({DECLARED[mode]})|({SWIN_NORM})')
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if declared.match(n)}
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    assert not any(re.search(r'\.(attn|ffn)\.', n) for n in trainable)  # frozen Swin weights


def test_train_backbone_norms_off_trains_only_the_method(mode):
    model = build(mode, train_backbone_norms=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(re.match(DECLARED[mode], n) for n in trainable)


def test_task_embeddings_give_different_outputs(mode):
    model = build(mode)
    randomize_zero_init(model)
    model.eval()
    out = model.peft.forward_tasks(torch.randn(1, 3, 64, 64))
    for a in TASKS:
        for b in TASKS:
            if a < b:
                assert (out[a][-1] - out[b][-1]).abs().max() > 1e-3, (a, b)
    if mode != 'polyhistor_lite':  # only the task embedding distinguishes tasks in these modes
        with torch.no_grad():
            model.task_embeds[1] = model.task_embeds[0]
        same = model.peft.forward_tasks(torch.randn(1, 3, 64, 64), ['semseg', 'parts'])
        torch.testing.assert_close(same['semseg'][-1], same['parts'][-1])


@pytest.mark.parametrize('tasks', [None, ['sal', 'semseg']])
def test_batched_equals_per_task_passes(mode, tasks):
    model = build(mode)
    randomize_zero_init(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    batched = model.peft.forward_tasks(x, tasks, batched=True)
    sequential = model.peft.forward_tasks(x, tasks, batched=False)
    assert list(batched) == list(sequential)
    for t in batched:
        for f, g in zip(batched[t], sequential[t]):
            torch.testing.assert_close(f, g, rtol=0, atol=1e-5)
    # and the gradients of the trainable set agree
    # a random linear read-out (a plain sum of LayerNorm outputs would have zero gradient)
    gen = torch.Generator().manual_seed(2)
    readout = {t: [torch.randn(f.shape, generator=gen) for f in feats] for t, feats in batched.items()}
    grads = []
    for b in (True, False):
        model.zero_grad()
        out = model.peft.forward_tasks(x, tasks, batched=b)
        sum((f * w).sum() for t in out for f, w in zip(out[t], readout[t])).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:  # sums over many tokens: compare relative to the gradient's size
        assert (grads[0][n] - grads[1][n]).norm() <= 1e-5 * grads[1][n].norm() + 1e-6, n


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for with_cp in (False, True):
        model = build('polyhistor', with_cp=with_cp)
        randomize_zero_init(model)
        model.eval()
        out = model.peft.forward_tasks(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
                                      ['sal', 'parts'])
        sum(f.square().mean() for feats in out.values() for f in feats).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-7)


def test_number_of_backbone_passes(mode):
    model = build(mode)
    calls = []
    model.patch_embed.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(2, 3, 64, 64)
    model(x, task='sal')
    assert calls == [2]  # single task: one plain pass
    calls.clear()
    model.peft.forward_tasks(x, ['sal'])
    assert calls == [2]
    calls.clear()
    model.peft.forward_tasks(x, batched=True)
    assert calls == [8]  # all tasks: one pass over the T*B images, task-major
    calls.clear()
    model.peft.forward_tasks(x, batched=False)
    assert calls == [2, 2, 2, 2]


def test_frozen_drop_path_is_off_in_training(mode):
    model = build(mode, drop_path_rate=0.3)
    randomize_zero_init(model)
    model.train()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x, task='sal')[-1], model(x, task='sal')[-1])


def test_lite_scales_and_shared_hypernet():
    model = build('polyhistor_lite')
    assert model.method.resolved_scales == (1, 2, 4, 8)
    assert model.template_hypernet.d == 16 and model.template_hypernet.n == 8 and model.template_hypernet.r == 2
    params = model.method.adapter_params(model, torch.tensor([0]))
    assert params['stage3_block0_ffn'].w_down.shape == (1, 128, 64)  # (d1 s) x (n1 s), s = 8
    assert model.adapters['stage2_block1_attn'].scaling_kernels.shape == (4, 4, 4, 4)  # T x s x s x s


def test_rank_resolution():
    assert resolve_rank(3, 12) == 3
    assert resolve_rank('n/4', 12) == 3
    assert resolve_rank('n/4', 6) == 1  # floor, at least 1
    assert resolve_rank('n / 8', 48) == 6
    for bad in ('n/0', 'd/4', 0, 1.5, True):
        with pytest.raises((ValueError, TypeError)):
            resolve_rank(bad, 12)


def test_bad_input_is_named():
    model = build('polyhistor')
    with pytest.raises(KeyError, match="unknown task.*'depth'"):
        model.peft.forward_tasks(torch.randn(1, 3, 64, 64), ['semseg', 'depth'])
    with pytest.raises(ValueError, match='distinct'):
        model.peft.forward_tasks(torch.randn(1, 3, 64, 64), ['sal', 'sal'])
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 64, 64), task='sal')
    with pytest.raises(RuntimeError, match=r'task=\.\.\.\) or backbone.peft.forward_tasks'):
        model(torch.randn(1, 3, 64, 64))  # four tasks: which one?
    with pytest.raises(TypeError, match='forward_tasks'):
        model(torch.randn(1, 3, 64, 64), tasks=['sal'])
    with pytest.raises(ValueError, match="mode must be one of.*'polyhistor_tiny'"):
        PolyhistorSwin(mode='polyhistor_tiny', **TINY)
    with pytest.raises(ValueError, match='rank must be None'):
        PolyhistorSwin(mode='hyperformer', rank=2, **TINY)
    with pytest.raises(ValueError, match='rho=3'):
        PolyhistorSwin(mode='polyhistor', reduction_ratio=3, **TINY)
    with pytest.raises(ValueError, match='scales'):
        PolyhistorSwin(mode='polyhistor_lite', scales=(1, 2, 2, 8), **TINY)
    with pytest.raises(ValueError, match='positions'):
        PolyhistorSwin(mode='polyhistor', positions=('mlp',), **TINY)
    with pytest.raises(ValueError, match='even'):
        PolyhistorSwin(mode='polyhistor_lite', embed_dims_task=7, **TINY)


def test_attn_only_positions():
    model = build('polyhistor', positions=('attn',))
    assert all(name.endswith('_attn') for name in model.adapters)
    assert len(model.adapters) == sum(TINY['depths'])


# ---------------------------------------------------------------- checkpoints
def to_official_layout(sd):
    """mmseg Swin keys -> the official (Microsoft) layout, as the released checkpoints have them."""
    out = OrderedDict()
    for k, v in sd.items():
        if 'relative_position_index' in k or re.match(r'norm\d', k):
            continue
        nk = k.replace('stages.', 'layers.').replace('attn.w_msa.', 'attn.')
        nk = nk.replace('patch_embed.projection', 'patch_embed.proj')
        nk = nk.replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
        if 'downsample.reduction' in k:  # mmseg's nn.Unfold channel order -> the official concatenation order
            o, i = v.shape
            v = v.reshape(o, i // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3]].reshape(o, i)
        elif 'downsample.norm' in k:
            v = v.reshape(-1, 4).T[[0, 2, 1, 3]].reshape(-1)
        out[nk] = v
    out['norm.weight'], out['norm.bias'] = torch.ones(128), torch.zeros(128)
    out['head.weight'], out['head.bias'] = torch.randn(10, 128), torch.zeros(10)
    out['layers.0.blocks.0.attn.relative_position_index'] = torch.zeros(16, 16, dtype=torch.long)
    return out


@pytest.fixture
def source_swin():
    torch.manual_seed(3)
    swin = SwinTransformer(**TINY)
    swin.init_weights()
    with torch.no_grad():  # non-trivial norms, so a wrong permutation would show
        for n, p in swin.named_parameters():
            if 'norm' in n:
                p.add_(torch.randn_like(p) * 0.1)
    swin.eval()  # mmseg's SwinTransformer.train returns None
    return swin


@pytest.mark.parametrize('layout', ['official', 'mmseg_segmentor'])
def test_pretrained_checkpoint_loads_as_users_have_it(tmp_path, source_swin, layout):
    sd = source_swin.state_dict()
    if layout == 'official':
        ckpt = dict(model=to_official_layout(sd))
    else:
        ckpt = dict(state_dict={**{'backbone.' + k: v for k, v in sd.items()},
                                'decode_head.conv.weight': torch.ones(1)})
    path = str(tmp_path / 'swin.pth')
    torch.save(ckpt, path)
    model = PolyhistorSwin(mode='polyhistor_lite', init_cfg=dict(type='Pretrained', checkpoint=path), **TINY)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    model.init_weights()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    ref = source_swin(x)
    if layout == 'official':  # the output norms are not in classification checkpoints: identity affine
        for i in range(4):
            getattr(source_swin, f'norm{i}').reset_parameters()
        ref = source_swin(x)
    for f, r in zip(model(x, task='sal'), ref):
        torch.testing.assert_close(f, r, rtol=0, atol=1e-5)


def test_checkpoint_that_does_not_fit_is_an_error(tmp_path, source_swin):
    sd = to_official_layout(source_swin.state_dict())
    del sd['layers.2.blocks.1.mlp.fc2.weight']
    sd['layers.0.blocks.0.extra.weight'] = torch.ones(1)
    path = str(tmp_path / 'bad.pth')
    torch.save(dict(model=sd), path)
    model = PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path), **TINY)
    with pytest.raises(KeyError, match=r'missing \[.stages\.2\.blocks\.1\.ffn\.layers\.1\.weight.\].*unexpected'):
        model.init_weights()
