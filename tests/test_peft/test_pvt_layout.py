"""mmdet's Pyramid Vision Transformer (PVT) under the PEFT layer (issue #12), against plain torch.

- ``find_blocks`` on PVT v1 and v2: the sites (attention output before drop path, MLP output at the
  MixFFN's drop path, the packed projection inside ``nn.MultiheadAttention``), no ``qkv`` / ``fc1`` /
  ``fc2``, and the clear errors of the methods that need them;
- the written-out spatial-reduction attention computes the toolbox's output bit for bit;
- LoRA on q / v / the fused qkv equals a hand-written attention with ``W + s B A`` on those rows
  (queries from the tokens, keys / values from the spatially reduced tokens);
- task-wise BitFit's in_proj / out_proj deltas act as biases of those projections;
- Polyhistor / Hyperformer / Lite on PVT: the batched pass over all tasks equals one pass per task;
- detach gives the toolbox classes and keys back; an attached model deep-copies and pickles;
- the frozen drop path at the MLP site is the identity in training (``frozen_eval``).
"""
import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from peft_checks import max_diff

import mmpeft  # noqa: F401
from mmpeft.backbones import build_peft_backbone
from mmpeft.peft.layout import SpatialReductionAttentionExtras, find_blocks, get_module
from mmpeft.registry import MODELS

TASKS = ['semseg', 'parts', 'sal', 'normals']
# widths 16 x (1, 2, 5, 8), as PVT-Small's 64 x (1, 2, 5, 8); two blocks in stage 1 (sr 4), one elsewhere
PVT = dict(type='mmdet.PyramidVisionTransformer', pretrain_img_size=32, embed_dims=16, num_layers=(2, 1, 1, 1),
           num_heads=(1, 2, 5, 8), sr_ratios=(4, 2, 1, 1), mlp_ratios=(2, 2, 2, 2), drop_path_rate=0.1)
PVT_V2 = dict(type='mmdet.PyramidVisionTransformerV2', embed_dims=16, num_layers=(1, 1, 1, 1),
              num_heads=(1, 2, 5, 8), sr_ratios=(4, 2, 1, 1), mlp_ratios=(2, 2, 2, 2))


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 40, generator=torch.Generator().manual_seed(0))


def build(method: dict, backbone: dict = PVT, seed: int = 0):
    torch.manual_seed(seed)
    bb = build_peft_backbone(copy.deepcopy(backbone), copy.deepcopy(method))
    bb.init_weights()
    bb.eval()
    return bb


@torch.no_grad()
def randomise(model, pattern: str, seed: int = 1, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    for n, p in model.named_parameters():
        if pattern in n:
            p.copy_(std * torch.randn(p.shape, generator=g))


def tokens(d: int, hw=(8, 10), seed: int = 2) -> torch.Tensor:
    return torch.randn(2, hw[0] * hw[1], d, generator=torch.Generator().manual_seed(seed))


def reference_attention(sra, x, hw, q_delta=0., k_delta=0., v_delta=0., in_bias_delta=0., out_bias_delta=0.,
                        sr_bias_delta=0., norm_bias_delta=0.):
    """``x + SRA(x)`` by hand from the module's tensors (batch-first, explicit softmax; no module is called),
    with additive changes of the projected queries / keys / values and of the biases."""
    mha = sra.attn
    d, h = mha.embed_dim, mha.num_heads
    x_kv = x
    if sra.sr_ratio > 1:
        B, L, C = x.shape
        m = F.conv2d(x.transpose(1, 2).reshape(B, C, *hw), sra.sr.weight, sra.sr.bias + sr_bias_delta,
                     stride=sra.sr_ratio)
        x_kv = F.layer_norm(m.flatten(2).transpose(1, 2), (C,), sra.norm.weight, sra.norm.bias + norm_bias_delta,
                            sra.norm.eps)
    w, b = mha.in_proj_weight, mha.in_proj_bias + in_bias_delta
    q = x @ w[:d].T + b[:d] + (q_delta(x) if callable(q_delta) else q_delta)
    k = x_kv @ w[d:2 * d].T + b[d:2 * d] + (k_delta(x_kv) if callable(k_delta) else k_delta)
    v = x_kv @ w[2 * d:].T + b[2 * d:] + (v_delta(x_kv) if callable(v_delta) else v_delta)

    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)
    att = torch.softmax(heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(d // h), dim=-1)
    out = (att @ heads(v)).transpose(1, 2).reshape(x.shape)
    return x + out @ mha.out_proj.weight.T + mha.out_proj.bias + out_bias_delta


# ----------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize('cfg,mlp_last', [(PVT, '3'), (PVT_V2, '4')], ids=['v1', 'v2'])
def test_find_blocks_on_pvt(cfg, mlp_last):
    model = MODELS.build(copy.deepcopy(cfg))
    blocks = find_blocks(model)
    first = 1 if cfg is PVT else 0  # v1: the position embedding is layers.i.1.0
    assert [b.name for b in blocks][:2] == [f'layers.0.1.{first}', f'layers.0.1.{first + 1}' if cfg is PVT
                                            else f'layers.1.1.{first}']
    assert [b.dims for b in blocks] == ([16, 16, 32, 80, 128] if cfg is PVT else [16, 32, 80, 128])
    b = blocks[-1]
    assert (b.family, b.windowed, b.qkv, b.fc1, b.fc2) == ('pvt', False, None, None, None)
    assert (b.attn, b.proj, b.mlp, b.ffn, b.in_proj, b.out_proj) == tuple(
        f'{b.name}.{s}' for s in ('attn', 'attn.proj_drop', 'ffn.dropout_layer', 'ffn', 'attn.attn',
                                  'attn.attn.out_proj'))
    # the 1x1 convolution that is the MLP's second linear, for the error message's sake
    assert isinstance(get_module(model, f'{b.name}.ffn.layers.{mlp_last}'), torch.nn.Conv2d)
    with pytest.raises(ValueError, match=r"LoRA target 'fc1' needs the 'fc1' linear.*PVT.*1x1 convolutions"):
        build(dict(type='LoRA', targets=('fc1',)), cfg)


def test_sites_are_the_sub_layer_outputs_before_drop_path_and_residual():
    """The attention / MLP sites return, in (B, L, d), what the block adds to its input."""
    model = build(dict(type='FrozenBackbone'))
    blk_layout = find_blocks(model)[0]
    blk = get_module(model, blk_layout.name)
    seen = {}
    for site in ('proj', 'mlp'):
        get_module(model, getattr(blk_layout, site)).register_forward_hook(
            lambda m, a, o, site=site: seen.__setitem__(site, o))
    x = tokens(16)
    with torch.no_grad():
        y = blk(x, (8, 10))
    x1 = x + seen['proj']
    assert seen['proj'].shape == seen['mlp'].shape == x.shape
    torch.testing.assert_close(y, x1 + seen['mlp'], rtol=0, atol=0)
    torch.testing.assert_close(x1, reference_attention(blk.attn, blk.norm1(x), (8, 10)) - blk.norm1(x) + x,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('sr', [1, 2, 4])
def test_written_out_attention_is_the_toolbox_bit_for_bit(sr):
    from mmdet.models.backbones.pvt import SpatialReductionAttention

    from mmpeft.peft.layout import override_spatial_reduction_attention, restore_window_attention
    torch.manual_seed(0)
    sra = SpatialReductionAttention(80, 5, sr_ratio=sr).eval()
    x = tokens(80)
    with torch.no_grad():
        plain = sra(x, (8, 10))
        override_spatial_reduction_attention(sra)
        assert type(sra).__name__ == 'MmdetSpatialReductionAttentionWithExtras'
        assert torch.equal(sra(x, (8, 10)), plain)
        assert torch.allclose(plain, reference_attention(sra, x, (8, 10)), rtol=1e-5, atol=1e-5)
    restore_window_attention(sra)
    assert type(sra) is SpatialReductionAttention


# ----------------------------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize('targets', [('q', 'v'), ('qkv',)])
def test_lora_on_pvt_equals_plain_torch(targets):
    """LoRA rows of the packed projection: ``W_q x + s B_q A_q x`` for the queries (tokens) and
    ``W_v x_kv + s B_v A_v x_kv`` for the values (spatially reduced tokens); fused qkv: one (A, B)."""
    model = build(dict(type='LoRA', rank=2, scaling=3.0, targets=targets, norm=targets == ('qkv',)))
    randomise(model, 'lora_')
    params = dict(model.named_parameters())
    for blk in find_blocks(model)[:3:2]:  # a block with sr 4 and one with sr 2
        sra = get_module(model, blk.attn)
        assert isinstance(sra, SpatialReductionAttentionExtras)
        d = blk.dims
        hw = (8, 10) if d == 16 else (4, 5)
        x = tokens(d, hw)

        def branch(target, rows):
            A, B = params[f'{blk.in_proj}.lora_{target}.A'][0], params[f'{blk.in_proj}.lora_{target}.B'][0]
            nw = params.get(f'{blk.in_proj}.lora_{target}.norm_weight')
            nb = params.get(f'{blk.in_proj}.lora_{target}.norm_bias')

            def delta(t):
                if nw is not None:
                    t = F.layer_norm(t, (d,), nw[0], nb[0])
                return 3.0 * (t @ A.T @ B[rows].T)
            return delta
        if targets == ('qkv',):
            deltas = dict(q_delta=branch('qkv', slice(0, d)), k_delta=branch('qkv', slice(d, 2 * d)),
                          v_delta=branch('qkv', slice(2 * d, 3 * d)))
        else:
            deltas = dict(q_delta=branch('q', slice(None)), v_delta=branch('v', slice(None)))
        with torch.no_grad():
            got = sra(x, hw)
            want = reference_attention(sra, x, hw, **deltas)
            assert max_diff([got], [reference_attention(sra, x, hw)]) > 1e-2  # the branches act
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            with model.peft.disabled():  # without the branches: the frozen attention
                torch.testing.assert_close(sra(x, hw), reference_attention(sra, x, hw), rtol=1e-5, atol=1e-5)


def test_task_wise_bitfit_deltas_act_as_projection_biases():
    model = build(dict(type='BitFit', tasks=TASKS))
    randomise(model, 'task_bias')
    params = dict(model.named_parameters())
    blk = find_blocks(model)[0]
    sra = get_module(model, blk.attn)
    x = tokens(16)
    for t in (1, 3):
        with torch.no_grad(), model.peft.task(TASKS[t]):
            got = sra(x, (8, 10))
            want = reference_attention(sra, x, (8, 10),
                                       in_bias_delta=params[f'{blk.in_proj}.task_bias.delta'][t],
                                       out_bias_delta=params[f'{blk.out_proj}.task_bias.delta'][t],
                                       sr_bias_delta=params[f'{blk.attn}.sr.task_bias.delta'][t],
                                       norm_bias_delta=params[f'{blk.attn}.norm.task_bias.delta'][t])
        assert max_diff([got], [reference_attention(sra, x, (8, 10))]) > 1e-2  # the deltas act
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------- task-conditioned
@pytest.mark.parametrize('method', [
    dict(type='Polyhistor', reduction_ratio=4, rank=1, embed_dims_task=8),
    dict(type='Hyperformer', reduction_ratio=4, embed_dims_task=8),
    dict(type='PolyhistorLite', reduction_ratio=2, embed_dims_task=8)], ids=lambda m: m['type'])
def test_batched_tasks_equal_one_pass_per_task(method):
    model = build(dict(method, tasks=TASKS))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    if method['type'] == 'PolyhistorLite':  # s = d / d1 = 1, 2, 5, 8 as PVT-Small's stages
        assert model.peft.method.resolved_scales == (1, 2, 5, 8)
    x = images()
    with torch.no_grad():
        batched = model.peft.forward_tasks(x, batched=True)
        single = model.peft.forward_tasks(x, batched=False)
        plain = model.peft.forward_tasks(x[:1], batched=False)
    for t in TASKS:  # to 1e-5 of each map's largest value (float32 matmuls of other batch sizes)
        for b, s, p in zip(batched[t], single[t], plain[t]):
            scale = float(s.abs().max())
            assert max_diff([b], [s]) <= 1e-5 * scale
            assert max_diff([s[:1]], [p]) <= 1e-5 * scale  # the images are independent
    assert max_diff(single['semseg'], single['normals']) > 1e-4  # each task its own adapters


# ------------------------------------------------------------------------------------------ lifecycle
@pytest.mark.parametrize('method', [dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')),
                                    dict(type='BitFit', tasks=TASKS)], ids=['lora', 'bitfit'])
def test_detach_restores_classes_and_copies_work(method):
    from mmdet.models.backbones.pvt import SpatialReductionAttention
    model = build(method)
    plain = MODELS.build(copy.deepcopy(PVT))
    sras = [get_module(model, b.attn) for b in find_blocks(model)]
    assert all(type(s).__name__ == 'MmdetSpatialReductionAttentionWithExtras' for s in sras)
    assert not model.peft.mergeable
    with pytest.raises(ValueError, match='cannot be merged'):
        model.peft.merge(task=0)
    randomise(model, 'lora_' if method['type'] == 'LoRA' else 'task_bias')
    x = images()
    task = {} if method['type'] == 'LoRA' else dict(task='sal')
    with torch.no_grad():
        out = model(x, **task)
        clone = pickle.loads(pickle.dumps(model))  # the extras class is found by name
        assert max_diff(clone(x, **task), out) == 0
        twin = copy.deepcopy(model)
        assert max_diff(twin(x, **task), out) == 0
        randomise(twin, 'lora_' if method['type'] == 'LoRA' else 'task_bias', seed=5)
        assert max_diff(model(x, **task), out) == 0  # the copy's branches are its own
    model.peft.detach()
    assert all(type(s) is SpatialReductionAttention for s in sras)
    assert all('peft_in_proj' not in vars(s) for s in sras)
    assert set(model.state_dict()) == set(plain.state_dict())
    assert [type(m) for m in model.modules()] == [type(m) for m in plain.modules()]


def test_frozen_drop_path_keeps_the_mlp_site_exact_in_training():
    """With frozen_eval the drop path at the MLP site (and after the attention) is off in training, so the
    adapters see the MLP output itself: training-mode outputs equal eval-mode outputs."""
    model = build(dict(type='Adapter', reduction_ratio=4, position='both'))
    assert any(n.endswith('ffn.dropout_layer') for n in model.peft.frozen_eval_modules)
    randomise(model, 'adapter_')
    x = images()
    with torch.no_grad():
        model.eval()
        ref = model(x)
        model.train()
        torch.manual_seed(3)
        assert max_diff(model(x), ref) == 0
