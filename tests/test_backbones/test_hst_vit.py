"""HSTViT (Hierarchical Side-Tuning), its parts, ViTPyramid and ViT checkpoint loading.

Small ViTs (4 layers, width 64, 16-pixel patches) built by the same classes as the full configs; the
parameter counts are checked on the full-size ViT-B (random init) and ViT-L (meta device).
"""
import json
import os.path as osp
import re
from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmpeft  # noqa: F401
from mmpeft.backbones import HSTViT
from mmpeft.backbones.side_network import HierarchicalSideNetwork, MetaGlobalCrossAttention, SideBlock
from mmpeft.backbones.timm_vit import build_timm_vit, pad_to_multiple, stage_resolutions, vit_layer_outputs
from mmpeft.backbones.transformation_bridge import TransformationBridge
from mmpeft.backbones.vit_checkpoint import load_vit_weights, mmpretrain_to_timm
from mmpeft.backbones.vit_pyramid import ViTPyramid
from mmpeft.registry import MODELS
from mmpeft.utils.param_count import count_params

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
with open(osp.join(ROOT, 'configs', 'param_counts.json')) as _f:
    PINNED = json.load(_f)['counts']
TINY_VIT = dict(depth=4, embed_dim=64, num_heads=2, img_size=64)
TINY_DIMS = [16, 24, 32, 48]


def tiny_hst(**kwargs) -> HSTViT:
    torch.manual_seed(0)
    cfg = dict(vit_kwargs=TINY_VIT, embed_dims=TINY_DIMS)
    cfg.update(kwargs)
    return HSTViT(**cfg)


def timm_reference(model: nn.Module) -> nn.Module:
    """timm's own ViT with the same weights (as timm builds it, plus dynamic image size)."""
    ref = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                            dynamic_img_size=True, **TINY_VIT)
    ref.load_state_dict(model.vit.state_dict())
    return ref.eval()


def randomize_norms(vit: nn.Module) -> None:
    """Non-trivial LayerNorm parameters, so a checkpoint that leaves them untouched is noticed."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in vit.named_parameters():
            if 'norm' in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if n.endswith('weight') else 0.0))


# --------------------------------------------------------------------------- registry / shapes
def test_registered_in_root_registry_and_found_from_toolbox_scopes():
    from mmengine.registry import DefaultScope
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        with DefaultScope.overwrite_default_scope(scope):
            torch.manual_seed(0)
            m = MODELS.build(dict(type='HSTViT', vit_kwargs=TINY_VIT, embed_dims=TINY_DIMS))
            assert isinstance(m, HSTViT)


@pytest.mark.parametrize('size', [(64, 64), (70, 100), (33, 47), (16, 16)])
def test_output_strides_and_rounding(size):
    """Outputs are ceil(H / s) x ceil(W / s) for s = 4, 8, 16, 32, channels = embed_dims."""
    m = tiny_hst().eval()
    h, w = size
    with torch.no_grad():
        outs = m(torch.randn(2, 3, h, w))
    assert len(outs) == 4
    for o, s, c in zip(outs, (4, 8, 16, 32), TINY_DIMS):
        assert o.shape == (2, c, -(-h // s), -(-w // s))
        assert torch.isfinite(o).all()


def test_cropping_equals_padded_computation():
    """A non-multiple-of-32 input gives the top-left part of what its zero-padded version gives."""
    m = tiny_hst().eval()
    x = torch.randn(1, 3, 70, 100)
    xp = F.pad(x, (0, 28, 0, 26))  # to 96 x 128
    with torch.no_grad():
        a, b = m(x), m(xp)
    for oa, ob in zip(a, b):
        h, w = oa.shape[-2:]
        torch.testing.assert_close(oa, ob[..., :h, :w], rtol=0, atol=1e-6)


def test_out_indices_and_truncation():
    """Only the stages up to the last requested one (and the ViT layers feeding them) are built."""
    m = tiny_hst(out_indices=(1,))
    assert len(m.side_network.stages) == 2 and m.num_layers == 2
    assert m.meta_tokens.shape == (2, 1, 64)
    assert all(not re.match(r'vit\.blocks\.[23]\.', n) for n in m.peft.trainable)
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape for o in outs] == [(1, 24, 8, 8)]


def test_pooled_output_for_classification():
    m = tiny_hst(out_type='pooled').eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        (pooled,) = m(x)
        assert pooled.shape == (3, TINY_DIMS[-1])
        full = tiny_hst().eval()(x)[-1]
    # the released model's fc_norm: BatchNorm1d without affine, eps 1e-6, on the pooled vector
    bn = m.fc_norm
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        (pooled,) = m(x)
    avg = full.mean(dim=(2, 3))
    torch.testing.assert_close(pooled, (avg - bn.running_mean) / torch.sqrt(bn.running_var + 1e-6))
    plain = tiny_hst(out_type='pooled', pooled_norm_cfg=None).eval()
    assert plain.fc_norm is None
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0], avg)
    # training: batch statistics; one image cannot be normalised, which is named
    m.train()
    with pytest.raises(ValueError, match='more than one image per training batch.*pooled_norm_cfg=None'):
        m(x[:1])


# --------------------------------------------------------------------------- trainable set
def expected_trainable(m: HSTViT):
    names = [n for n, _ in m.named_parameters()]
    keep = [n for n in names
            if n.startswith(('side_network.', 'bridge.')) or n == 'meta_tokens'
            or re.fullmatch(r'vit\.blocks\.\d+\.norm[12]\.(weight|bias)', n)]
    return keep


def test_trainable_set_is_exactly_hst():
    m = tiny_hst()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == expected_trainable(m) == m.peft.trainable
    # what stays frozen: embeddings, attention, MLP, the final norm
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    for n in ('vit.cls_token', 'vit.pos_embed', 'vit.patch_embed.proj.weight', 'vit.norm.weight',
              'vit.blocks.0.attn.qkv.weight', 'vit.blocks.3.mlp.fc2.bias'):
        assert n in frozen


def test_batch_size_one_trains_and_gradients_are_exactly_on_trainable_set():
    m = tiny_hst(drop_path_rate=0.0)
    m.train()
    x = torch.randn(1, 3, 64, 96)
    outs = m(x)
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for n, p in m.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
        elif n.endswith('attn.k.bias'):
            # a key bias adds the same logit to both keys of a query: softmax ignores it (zero
            # gradient), but it is in the graph (DDP finds no unused parameter)
            assert p.grad is not None and p.grad.abs().max() < 1e-6, n
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    # frozen dropout / drop-path of the ViT stay in eval mode while training; LN-tuned norms train
    assert not m.vit.pos_drop.training and m.vit.blocks[0].norm1.training
    # train and eval give the same features (no stochastic layer is active; the stem's BatchNorm,
    # which normalises with the batch's statistics in training, is put on its running ones)
    m.side_network.stem.norm1.eval()
    with torch.no_grad():
        outs = m(x)
    m.eval()
    with torch.no_grad():
        outs_eval = m(x)
    for a, b in zip(outs, outs_eval):
        torch.testing.assert_close(a.detach(), b)


def test_ablation_switches_change_the_trainable_set():
    m = tiny_hst(num_meta_tokens=0, tune_vit_norms=False, share_bridge=False)
    names = set(m.peft.trainable)
    assert 'meta_tokens' not in names and not any(n.startswith('vit.') for n in names)
    assert len(m.bridge.linears) == 4  # one per ViT layer (4 layers)
    n_meta = tiny_hst(num_meta_tokens=4).meta_tokens.shape
    assert n_meta == (4, 4, 64)
    with pytest.raises(ValueError, match='Meta-Global branch is empty'):
        tiny_hst(num_meta_tokens=0, use_global_token=False)


# --------------------------------------------------------------------------- the frozen ViT
def test_vit_alone_equals_timm_forward_features():
    m = tiny_hst().eval()
    randomize_norms(m.vit)
    ref = timm_reference(m)
    for size in [(64, 64), (48, 112)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(m.forward_vit(x), ref.forward_features(x), rtol=0, atol=1e-5)
            # the per-layer path used by HST, with the Meta-Register disabled, is the same ViT
            patch, reg, last = vit_layer_outputs(m.vit, x)
            assert reg == [None] * 4
            feats = ref.forward_features(x)
            torch.testing.assert_close(m.vit.norm(patch[-1]).flatten(1, 2), feats[:, 1:], rtol=0, atol=1e-5)


def test_other_timm_vits_patch14_register_tokens_distilled():
    """A patch-14 ViT with 4 register tokens and layer scale (DINOv2 style), and DeiT's distilled ViT
    (2 prefix tokens): the side network gets the right grids, the ViT alone is timm's."""
    for name, img in [('vit_small_patch14_reg4_dinov2', 56), ('deit_tiny_distilled_patch16_224', 64)]:
        kw = dict(depth=4, embed_dim=64, num_heads=2, img_size=img)
        torch.manual_seed(0)
        m = HSTViT(vit_name=name, vit_kwargs=kw, embed_dims=TINY_DIMS).eval()
        x = torch.randn(1, 3, 70, 98)
        with torch.no_grad():
            outs = m(x)
        assert [tuple(o.shape[-2:]) for o in outs] == [(18, 25), (9, 13), (5, 7), (3, 4)], name
        ref = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **kw).eval()
        ref.load_state_dict(m.vit.state_dict())
        x = torch.randn(1, 3, img, 2 * img)  # whole patches: timm's own model takes no other size
        with torch.no_grad():
            torch.testing.assert_close(m.forward_vit(x), ref.forward_features(x), rtol=0, atol=1e-5)


def test_meta_register_enters_its_own_layer_only():
    """Token i takes part in layer i's attention (changes layer i's patch tokens), is read back after
    it, and is not carried into layer i + 1 (which gets its own token)."""
    m = tiny_hst().eval()
    x = torch.randn(1, 3, 64, 64)
    tokens = m.meta_tokens.detach().clone()
    with torch.no_grad():
        p0, r0, _ = vit_layer_outputs(m.vit, x, register_tokens=tokens)
        changed = tokens.clone()
        changed[2] += torch.randn(changed[2].shape)  # not a constant: LayerNorm would remove it
        p1, r1, _ = vit_layer_outputs(m.vit, x, register_tokens=changed)
        plain, _, _ = vit_layer_outputs(m.vit, x)
    assert all(r.shape == (1, 1, 64) for r in r0)
    for i in range(2):
        torch.testing.assert_close(p0[i], p1[i], rtol=0, atol=0)
        assert not torch.allclose(p0[i], plain[i])  # the token does enter attention
    assert not torch.allclose(p0[2], p1[2]) and not torch.allclose(r0[2], r1[2])
    # the token gets no position embedding: its layer-0 output is that of the block on the raw token
    blk = m.vit.blocks[0]
    seq = torch.cat([m.vit.norm_pre(m.vit._pos_embed(m.vit.patch_embed(x))), tokens[0][None]], 1)
    with torch.no_grad():
        torch.testing.assert_close(blk(seq)[:, -1:], r0[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- bridge / side block
def test_bridge_shares_one_linear_per_stage_and_projects_before_resizing():
    torch.manual_seed(0)
    bridge = TransformationBridge(64, [16, 24, 32, 48], [2, 2, 2, 2])
    scramble_trainable(bridge)
    assert len(bridge.linears) == 4 and bridge.layer_stage == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(bridge.register_norms) == 8  # one LayerNorm per ViT layer (released m_proj_norm1..8)
    patch = torch.randn(2, 4, 6, 64)
    reg = torch.randn(2, 1, 64)
    # (16, 24) and (8, 12) are integer ratios; (3, 5) is not, where the mean after resizing differs
    for layer, size in [(0, (16, 24)), (3, (8, 12)), (7, (3, 5))]:
        mg, fg = bridge(layer, patch, reg, size)
        lin, ln = bridge.linears[layer // 2], bridge.register_norms[layer]
        proj = lin(patch)
        want_reg = F.layer_norm(lin(reg), (lin.out_features, ), ln.weight, ln.bias, eps=1e-6)
        torch.testing.assert_close(mg[:, :1], want_reg)                       # LN_i(W_j F_mr)
        want = F.interpolate(proj.permute(0, 3, 1, 2), size=size, mode='bilinear', align_corners=False)
        torch.testing.assert_close(fg, want.flatten(2).transpose(1, 2))      # T(W_j F_p)
        torch.testing.assert_close(mg[:, 1], want.mean(dim=(2, 3)))          # AvgPool(T(W_j F_p))
        assert mg.shape == (2, 2, lin.out_features)
    assert not torch.allclose(want.mean(dim=(2, 3)), proj.mean(dim=(1, 2)), atol=1e-4)
    # eq. 1 as printed: no LayerNorm on the register token
    plain = TransformationBridge(64, [16, 24, 32, 48], [2, 2, 2, 2], register_norm=False)
    assert plain.register_norms is None
    mg, _ = plain(0, patch, reg, (4, 6))
    torch.testing.assert_close(mg[:, :1], plain.linears[0](reg))


def test_side_block_follows_eqs_4_and_5():
    torch.manual_seed(0)
    blk = SideBlock(32, num_heads=4).eval()
    scramble_trainable(blk)
    x, mg, fg = torch.randn(2, 20, 32), torch.randn(2, 2, 32), torch.randn(2, 20, 32)
    attn = blk.attn

    def ln(t, norm):  # the released Side blocks' LayerNorms: eps 1e-6
        return F.layer_norm(t, (32, ), norm.weight, norm.bias, eps=1e-6)
    # eq. 3/4 by hand: queries from LN(x), keys / values from the 2 Meta-Global tokens
    q = attn.q(ln(x, blk.norm1)).reshape(2, 20, 4, 8).transpose(1, 2)
    k = attn.k(mg).reshape(2, 2, 4, 8).transpose(1, 2)
    v = attn.v(mg).reshape(2, 2, 4, 8).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    assert a.shape == (2, 4, 20, 2)  # L x 2 attention: linear in L
    x_hat = x + attn.proj((a @ v).transpose(1, 2).reshape(2, 20, 32))
    y = x_hat + fg
    want = y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(ln(y, blk.norm2))))
    torch.testing.assert_close(blk(x, mg, fg), want, rtol=1e-5, atol=1e-5)


def test_side_network_block_counts_follow_vit_depth():
    hsn = HierarchicalSideNetwork([32, 48, 64, 72], [6, 6, 6, 6])
    assert [len(s) for s in hsn.stages] == [6, 6, 6, 6]
    # the released heads, for the classification dims too
    assert hsn.num_heads == [2, 4, 8, 12] and hsn.stages[3][0].attn.num_heads == 12
    assert HierarchicalSideNetwork([64, 128, 256, 384], [3, 3, 3, 3]).num_heads == [2, 4, 8, 12]
    with pytest.raises(ValueError, match=r'not divisible by num_heads \[3, 3, 3, 3\].*\(32, 3\)'):
        HierarchicalSideNetwork([32, 48, 64, 72], [1, 1, 1, 1], num_heads=[3, 3, 3, 3])


# --------------------------------------------------------------------------- forward == plain reference
# The released model (ViT_HSN) written out with plain torch functions, every eps spelled out:
# standard multi-head attention (q / k / v / SDPA / proj), the bridge on each layer's (copied) patch
# tokens, NCHW maps. HSTViT (folded 2-token attention, channels-last maps, one bridge product per layer
# sequence, serial or parallel) must give the same outputs and, in training, the same gradients.
def ln(t, norm, eps):
    return F.layer_norm(t, t.shape[-1:], norm.weight, norm.bias, eps=eps)


def ln2d(t, norm, eps):
    return ln(t.permute(0, 2, 3, 1), norm, eps).permute(0, 3, 1, 2)


def reference_attention(attn, x, context):
    b, n, d = x.shape
    m, h = context.shape[1], attn.num_heads
    q = attn.q(x).reshape(b, n, h, d // h).transpose(1, 2)
    context = attn.kv_norm(context)
    k = attn.k(context).reshape(b, m, h, d // h).transpose(1, 2)
    v = attn.v(context).reshape(b, m, h, d // h).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj(out.transpose(1, 2).reshape(b, n, d))


def reference_block(blk, x, mg, fg):
    if mg is not None:
        x = x + blk.drop_path(reference_attention(blk.attn, ln(x, blk.norm1, 1e-6), mg))
    if fg is not None:
        x = x + fg
    return x + blk.drop_path(blk.mlp.fc2(F.gelu(blk.mlp.fc1(ln(x, blk.norm2, 1e-6)))))


def reference_stem(stem, x):
    if isinstance(stem.norm1, nn.BatchNorm2d):  # released: conv3x3/s2 no bias - BN - ReLU - conv2x2/s2 - LN
        assert stem.conv1.bias is None and stem.conv2.kernel_size == (2, 2)
        bn = stem.norm1
        x = F.conv2d(x, stem.conv1.weight, None, stride=2, padding=1)
        x = F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                         training=bn.training, eps=1e-5)
        return ln2d(F.conv2d(F.relu(x), stem.conv2.weight, stem.conv2.bias, stride=2), stem.norm2, 1e-5)
    x = ln2d(F.conv2d(x, stem.conv1.weight, stem.conv1.bias, stride=2, padding=1), stem.norm1, 1e-6)
    return ln2d(F.conv2d(F.gelu(x), stem.conv2.weight, stem.conv2.bias, stride=2, padding=1), stem.norm2, 1e-6)


def reference_hst_forward(m: HSTViT, x):
    h, w = x.shape[-2:]
    x_side = pad_to_multiple(x, (32, 32))
    patch, register, _ = vit_layer_outputs(m.vit, pad_to_multiple(x_side, m.patch_size), m.num_layers,
                                           m.meta_tokens)
    hsn, bridge = m.side_network, m.bridge
    feat, outs, layer = reference_stem(hsn.stem, x_side), [], 0
    for j, blocks in enumerate(hsn.stages):
        if j:
            down = hsn.downsamples[j - 1]
            feat = ln2d(F.conv2d(feat, down.proj.weight, down.proj.bias, stride=2, padding=1), down.norm, 1e-5)
        b, c, fh, fw = feat.shape
        tokens = feat.flatten(2).transpose(1, 2)
        for blk in blocks:
            lin = bridge.linears[bridge.layer_stage[layer]] if bridge.share_weights else bridge.linears[layer]
            proj = lin(patch[layer].contiguous()).permute(0, 3, 1, 2)
            if proj.shape[-2:] != (fh, fw):
                proj = F.interpolate(proj, size=(fh, fw), mode='bilinear', align_corners=False)
            parts = []
            if register[layer] is not None:
                reg = lin(register[layer])
                parts.append(reg if bridge.register_norms is None else ln(reg, bridge.register_norms[layer], 1e-6))
            if bridge.use_global_token:
                parts.append(proj.mean(dim=(2, 3)).unsqueeze(1))
            mg = torch.cat(parts, dim=1) if parts else None
            fg = proj.flatten(2).transpose(1, 2) if bridge.use_fine_grained else None
            tokens = reference_block(blk, tokens, mg, fg)
            layer += 1
        feat = ln(tokens, hsn.norms[j], 1e-6).transpose(1, 2).reshape(b, c, fh, fw)
        outs.append(feat)
    outs = [o[..., :s[0], :s[1]] for o, s in zip(outs, stage_resolutions(h, w, m.strides))]
    if m.out_type == 'pooled':
        pooled = outs[-1].mean(dim=(2, 3))
        if m.fc_norm is not None:
            bn = m.fc_norm
            pooled = F.batch_norm(pooled, bn.running_mean.clone(), bn.running_var.clone(),
                                  training=bn.training, eps=1e-6)
        return (pooled,)
    return tuple(outs[i] for i in m.out_indices)


def scramble_trainable(m: nn.Module, seed: int = 2) -> None:
    """Trained-looking HST weights: with the init (std 0.02) the attention would be near uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad:
                base = 1.0 if n.endswith('weight') and 'norm' in n else 0.0
                p.copy_(base + torch.randn(p.shape, generator=g) * (0.2 if base else 0.3))


@pytest.mark.parametrize('kwargs', [dict(), dict(num_meta_tokens=2, kv_norm=True),
                                    dict(num_meta_tokens=0), dict(use_global_token=False),
                                    dict(use_fine_grained=False, out_indices=(1, 2)),
                                    dict(out_type='pooled', share_bridge=False),
                                    dict(stem='conv_ln', register_norm=False),
                                    dict(execution='parallel', out_type='pooled')])
def test_forward_equals_plain_reference(kwargs):
    m = tiny_hst(**kwargs).eval()
    scramble_trainable(m)
    if m.fc_norm is not None:
        m.fc_norm.running_mean.normal_()
        m.fc_norm.running_var.uniform_(0.5, 2.0)
    stem_bn = m.side_network.stem.norm1
    if isinstance(stem_bn, nn.BatchNorm2d):
        stem_bn.running_mean.normal_()
        stem_bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 70, 100)
    with torch.no_grad():
        want = reference_hst_forward(m, x)
        got = m(x)
    assert len(got) == len(want)
    for g, r in zip(got, want):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        for g, r in zip(m(x), want):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_training_forward_and_gradients_equal_plain_forward():
    m = tiny_hst(num_meta_tokens=1)
    m.train()
    scramble_trainable(m)
    x = torch.randn(2, 3, 64, 96)
    weights = [torch.randn(o.shape) for o in m.eval()(x)]
    m.train()
    grads = []
    for forward in (m, lambda inp: reference_hst_forward(m, inp)):
        m.zero_grad()
        outs = forward(x)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) == set(m.peft.trainable)
    # float rounding: relative, plus a little of the largest gradient (some entries are small
    # differences of large sums over the tokens)
    scale = max(g.abs().max() for g in grads[1].values())
    for n, g in grads[0].items():
        want = grads[1][n]
        assert want.abs().max() > 0, n
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6 * scale, msg=n)


@pytest.mark.parametrize('num_tokens', [1, 2, 3])
@pytest.mark.parametrize('qkv_bias', [True, False])
def test_folded_cross_attention_equals_standard_attention(num_tokens, qkv_bias):
    torch.manual_seed(0)
    attn = MetaGlobalCrossAttention(48, num_heads=3, qkv_bias=qkv_bias)
    scramble_trainable(attn)
    x, ctx = torch.randn(2, 30, 48), torch.randn(2, num_tokens, 48)
    want = reference_attention(attn, x, ctx)
    torch.testing.assert_close(attn(x, ctx), want, rtol=1e-5, atol=1e-5)
    # still a real attention over the tokens: softmax weights, not a mean
    if num_tokens > 1:
        assert not torch.allclose(want, reference_attention(attn, x, ctx.mean(1, keepdim=True).expand_as(ctx)))


def test_side_network_outputs_are_channels_last_views():
    m = tiny_hst().eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 64, 64))
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in outs)


# --------------------------------------------------------------------------- checkpoints
def source_vit(img_size: int = 64) -> nn.Module:
    torch.manual_seed(123)
    vit = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                            dynamic_img_size=True, **dict(TINY_VIT, img_size=img_size))
    randomize_norms(vit)
    return vit


def assert_vit_equal(m: HSTViT, src_state):
    for k, v in m.vit.state_dict().items():
        torch.testing.assert_close(v, src_state[k], rtol=0, atol=0, msg=k)


def test_load_timm_in21k_layout_drops_pre_logits_and_head(tmp_path):
    src = source_vit().state_dict()
    ckpt = OrderedDict(src)
    ckpt['pre_logits.fc.weight'] = torch.randn(64, 64)
    ckpt['pre_logits.fc.bias'] = torch.randn(64)
    ckpt['head.weight'] = torch.randn(21843, 64)
    ckpt['head.bias'] = torch.randn(21843)
    path = tmp_path / 'jx_vit_tiny_in21k.pth'
    torch.save(ckpt, path)
    m = tiny_hst(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith('vit.')}
    m.init_weights()
    assert_vit_equal(m, src)
    for n, p in m.named_parameters():  # the HST modules keep their init; the trainable set is unchanged
        if n in before:
            torch.testing.assert_close(p, before[n], rtol=0, atol=0)
    assert [n for n, p in m.named_parameters() if p.requires_grad] == m.peft.trainable
    report = load_vit_weights(m.vit, str(path))
    assert report['layout'] == 'timm'
    assert set(report['dropped']) == {'pre_logits.fc.weight', 'pre_logits.fc.bias', 'head.weight', 'head.bias'}


def test_load_mae_layout_under_model(tmp_path):
    src = source_vit().state_dict()
    ckpt = dict(model=OrderedDict(src), epoch=399)
    ckpt['model']['decoder_embed.weight'] = torch.randn(32, 64)
    ckpt['model']['mask_token'] = torch.randn(1, 1, 32)
    path = tmp_path / 'mae_pretrain_vit_tiny.pth'
    torch.save(ckpt, path)
    m = tiny_hst(pretrained=str(path))
    m.init_weights()
    assert_vit_equal(m, src)
    assert load_vit_weights(m.vit, str(path))['layout'] == 'mae'


def test_load_with_a_prefix_from_a_bigger_checkpoint(tmp_path):
    src = source_vit().state_dict()
    state = OrderedDict(('encoder.' + k, v) for k, v in src.items())
    state['decoder.pred.weight'] = torch.randn(8, 64)
    path = tmp_path / 'whole_model.pth'
    torch.save(dict(state_dict=state), path)
    m = tiny_hst(init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='encoder.'))
    m.init_weights()
    assert_vit_equal(m, src)
    with pytest.raises(KeyError, match="no keys starting with prefix 'enc.'"):
        load_vit_weights(m.vit, str(path), prefix='enc.')


def test_load_mmpretrain_layout_gives_the_same_features(tmp_path):
    """A real mmpretrain VisionTransformer, saved as a classifier checkpoint, loads into HSTViT and
    the converted ViT computes the same features as mmpretrain's."""
    from mmpretrain.models.backbones import VisionTransformer
    torch.manual_seed(7)
    mmp = VisionTransformer(arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
                            img_size=64, patch_size=16, out_type='raw', final_norm=True)
    mmp.eval()
    randomize_norms(mmp)
    state = OrderedDict(('backbone.' + k, v) for k, v in mmp.state_dict().items())
    state['head.layers.head.weight'] = torch.randn(10, 64)
    state['head.layers.head.bias'] = torch.randn(10)
    path = tmp_path / 'mmpretrain_vit_tiny.pth'
    torch.save(dict(meta=dict(), state_dict=state), path)
    m = tiny_hst(init_cfg=dict(type='Pretrained', checkpoint=str(path))).eval()
    m.init_weights()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_vit(x), mmp(x)[0], rtol=0, atol=1e-5)
    assert set(mmpretrain_to_timm(mmp.state_dict())) == set(m.vit.state_dict())


def test_load_mmseg_layout_gives_the_same_features():
    from mmseg.models.backbones import VisionTransformer
    torch.manual_seed(8)
    seg = VisionTransformer(img_size=64, patch_size=16, embed_dims=64, num_layers=4, num_heads=2,
                            mlp_ratio=4, out_indices=3, final_norm=True, with_cls_token=True,
                            norm_cfg=dict(type='LN', eps=1e-6), interpolate_mode='bicubic')
    seg.eval()
    randomize_norms(seg)
    m = tiny_hst().eval()
    assert load_vit_weights(m.vit, dict(state_dict=seg.state_dict()))['layout'] == 'mmseg'
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = seg(x)[0]                                          # (1, 64, 4, 4) after the final norm
        got = m.forward_vit(x)[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_converter_tool_writes_a_timm_checkpoint(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    from mmpretrain.models.backbones import VisionTransformer
    torch.manual_seed(9)
    mmp = VisionTransformer(arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
                            img_size=64, patch_size=16)
    src, dst = tmp_path / 'mmp.pth', tmp_path / 'timm.pth'
    torch.save(dict(state_dict=OrderedDict(('backbone.' + k, v) for k, v in mmp.state_dict().items())), src)
    tool = osp.join(ROOT, 'tools', 'model_converters', 'mmpretrain_vit_to_timm.py')
    monkeypatch.setattr(sys, 'argv', [tool, str(src), str(dst)])
    runpy.run_path(tool, run_name='__main__')
    assert '(mmpretrain) -> ' in capsys.readouterr().out
    out = torch.load(dst, weights_only=True)
    m = tiny_hst()
    m.vit.load_state_dict(out, strict=True)
    torch.testing.assert_close(m.vit.blocks[1].mlp.fc1.weight, mmp.layers[1].ffn.layers[0][0].weight)


def test_pos_embed_of_another_grid_is_resampled():
    src = source_vit(img_size=32).state_dict()           # 2 x 2 grid
    m = tiny_hst()                                       # 4 x 4 grid
    load_vit_weights(m.vit, src)
    assert m.vit.pos_embed.shape == (1, 17, 64)
    torch.testing.assert_close(m.vit.pos_embed[:, 0], src['pos_embed'][:, 0])  # the cls entry is kept


# --------------------------------------------------------------------------- bad input
def test_checkpoint_with_missing_keys_names_them():
    src = source_vit().state_dict()
    del src['blocks.3.mlp.fc2.weight']
    src['blocks.7.attn.qkv.weight'] = torch.randn(192, 64)
    m = tiny_hst()
    with pytest.raises(KeyError) as e:
        load_vit_weights(m.vit, src)
    assert 'missing keys: blocks.3.mlp.fc2.weight' in str(e.value)
    assert 'unexpected keys: blocks.7.attn.qkv.weight' in str(e.value)


def test_checkpoint_of_a_wider_vit_names_the_shapes():
    torch.manual_seed(0)
    wide = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                             **dict(TINY_VIT, embed_dim=96, num_heads=2)).state_dict()
    with pytest.raises(ValueError, match=r'blocks\.0\.norm1\.weight: checkpoint \(96,\) vs model \(64,\)'):
        load_vit_weights(tiny_hst().vit, wide)


def test_unknown_layout_and_non_vit_checkpoint():
    with pytest.raises(KeyError, match='cannot tell the layout'):
        load_vit_weights(tiny_hst().vit, {'conv1.weight': torch.randn(8, 3, 3, 3)})
    with pytest.raises(ValueError, match="layout 'mmpretrain' was asked for but the keys are 'timm'"):
        load_vit_weights(tiny_hst().vit, source_vit().state_dict(), layout='mmpretrain')


def test_unknown_timm_model_name():
    with pytest.raises(ValueError, match=r"unknown timm model name 'vit_bse_patch16_224'.*vit_base_patch16_224"):
        HSTViT(vit_name='vit_bse_patch16_224')
    with pytest.raises(ValueError, match=r"timm model 'resnet18' is not a plain ViT"):
        build_timm_vit('resnet18')


def test_input_smaller_than_one_patch():
    m = tiny_hst()
    with pytest.raises(ValueError, match=r'input of 8x40 pixels is smaller than one ViT patch \(16x16\)'):
        m(torch.randn(1, 3, 8, 40))
    with pytest.raises(ValueError, match=r'expects an \(N, C, H, W\) image batch, got shape \(3, 64, 64\)'):
        m(torch.randn(3, 64, 64))


def test_bad_configuration_is_named():
    with pytest.raises(ValueError,
                       match=r'depths \[1, 1, 1, 2\] must be 4 positive numbers summing to the ViT depth 4'):
        tiny_hst(depths=[1, 1, 1, 2])
    with pytest.raises(ValueError, match='6 layers, which do not split evenly'):
        tiny_hst(vit_kwargs=dict(TINY_VIT, depth=6))
    assert tiny_hst(vit_kwargs=dict(TINY_VIT, depth=6), depths=[1, 1, 2, 2]).depths == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="init_cfg must be None or dict\\(type='Pretrained'"):
        tiny_hst(init_cfg=dict(type='Kaiming'))
    with pytest.raises(ValueError, match="out_type 'avg' is not one of"):
        tiny_hst(out_type='avg')
    with pytest.raises(ValueError, match=r"vit_kwargs \['num_classes'\] are set by mmpeft"):
        tiny_hst(vit_kwargs=dict(TINY_VIT, num_classes=10))


# --------------------------------------------------------------------------- ViTPyramid baselines
def test_vit_pyramid_linear_probe_and_full_finetune():
    torch.manual_seed(0)
    lp = ViTPyramid(vit_kwargs=TINY_VIT, finetune='linear_probe')
    assert all(n.startswith(('fpn1.', 'fpn2.')) for n in lp.peft.trainable)
    x = torch.randn(1, 3, 70, 100)
    outs = lp(x)
    assert [o.shape for o in outs] == [(1, 64, 18, 25), (1, 64, 9, 13), (1, 64, 5, 7), (1, 64, 3, 4)]
    sum(o.sum() for o in outs).backward()
    assert all((p.grad is not None) == p.requires_grad for p in lp.parameters())
    # the stride-16 map is the ViT's normed last layer, as timm computes it
    ref = timm_reference(lp)
    with torch.no_grad():
        feats = ref.forward_features(F.pad(x, (0, 28, 0, 26)))[:, 1:].transpose(1, 2).reshape(1, 64, 6, 8)
    torch.testing.assert_close(outs[2].detach(), feats[..., :5, :7], rtol=0, atol=1e-5)
    full = ViTPyramid(vit_kwargs=TINY_VIT, finetune='full')
    assert all(p.requires_grad for p in full.parameters())
    sum(o.sum() for o in full(x)).backward()
    assert full.vit.blocks[0].attn.qkv.weight.grad is not None


# --------------------------------------------------------------------------- parameter counts
class _Detector(nn.Module):
    def __init__(self, backbone, neck=None):
        super().__init__()
        self.backbone = backbone
        if neck is not None:
            self.neck = neck


def test_parameter_counts_vit_b():
    """Table 1 on the full-size ViT-B/16 (random init): 0.765M (cls dims), 10.40M (dense dims)."""
    from mmdet.models.necks import FPN
    torch.manual_seed(0)
    cls = count_params(_Detector(HSTViT(embed_dims=[32, 48, 64, 72])))
    # exact: the pinned counts of the configs these backbones come from (re-pin with
    # tools/dev/update_counts.py); below them, the paper's figures within a documented band
    assert cls['Encoder'] == PINNED['configs/hst/vtab1k/vit-b_hst_vtab1k-cifar100.py']['Encoder']
    assert cls['Encoder']['trainable'] == pytest.approx(0.765e6, rel=0.02)
    assert cls['Encoder']['total'] == pytest.approx(86.6e6, rel=0.01)  # 85.8M ViT-B + HST
    dense = count_params(_Detector(HSTViT(embed_dims=[64, 128, 256, 384]),
                                   FPN([64, 128, 256, 384], 256, num_outs=5)))
    pinned = PINNED['configs/hst/mask-rcnn_vit-b_hst_1x_coco.py']
    assert dense['Encoder'] == pinned['Encoder'] and dense['Neck'] == pinned['Neck']
    assert dense['Encoder']['trainable'] == pytest.approx(10.40e6, rel=0.02)
    assert dense['Encoder']['trainable'] + dense['Neck']['trainable'] == pytest.approx(13.21e6, rel=0.02)


def test_parameter_counts_vit_l():
    """ViT-L/16 with 6 Side blocks per stage (built on the meta device: only shapes are needed)."""
    with torch.device('meta'):
        dense = HSTViT(vit_name='vit_large_patch16_224', embed_dims=[64, 128, 256, 384])
        cls = HSTViT(vit_name='vit_large_patch16_224', embed_dims=[32, 48, 64, 72])
    assert [len(s) for s in dense.side_network.stages] == [6, 6, 6, 6]
    assert count_params(_Detector(dense))['Encoder']['trainable'] == 19_136_320
    assert count_params(_Detector(cls))['Encoder']['trainable'] == 1_360_544


def test_parameter_count_vit_pyramid_linear_probe():
    """[29]'s pyramid on ViT-B: 3 deconvolutions 768 -> 768 and one LayerNorm (7.08M)."""
    with torch.device('meta'):
        lp = ViTPyramid(finetune='linear_probe')
    assert count_params(_Detector(lp))['Encoder']['trainable'] == 3 * (768 * 768 * 4 + 768) + 2 * 768


# --------------------------------------------------------------------------- the released model's choices
def _trainable(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_released_classification_count_and_what_each_option_changes():
    """ViT-B/16 + [32, 48, 64, 72] + a 100-class head: 772,140 trainable, the released model's count.
    Each option away from it changes the count by the amount worked out here by hand."""
    with torch.device('meta'):
        released = HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled')
        assert _trainable(released) + 72 * 100 + 100 == 772_140
        # stem: conv3x3 3->32 no bias (864) + BN (64) + conv2x2 32->32 (4096 + 32) + LN (64) = 5,120;
        # conv_ln: conv3x3 3->16 (432 + 16) + LN (32) + conv3x3 16->32 (4608 + 32) + LN (64) = 5,184
        assert _trainable(released.side_network.stem) == 5_120
        conv_ln = HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled', stem='conv_ln')
        assert _trainable(conv_ln) - _trainable(released) == 64
        # one LayerNorm of d_j per ViT layer on the register token: 3 x 2 x (32 + 48 + 64 + 72)
        no_ln = HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled', register_norm=False)
        assert _trainable(released) - _trainable(no_ln) == 1_296
        # heads, the pooled BatchNorm1d (no affine), eps, drop path and the token init: no parameters
        for kw in (dict(num_heads=[1, 1, 2, 2]), dict(pooled_norm_cfg=None), dict(vit_drop_path_rate=0.0),
                   dict(meta_token_init='trunc_normal')):
            assert _trainable(HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled', **kw)) == _trainable(released), kw
    # the paper-literal form of points 1-2 with the old heads: mmpeft's earlier count, 770,908
    with torch.device('meta'):
        old = HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled', stem='conv_ln', register_norm=False)
    assert _trainable(old) + 7_300 == 770_908


def test_released_layer_details():
    m = tiny_hst()
    hsn = m.side_network
    stem = hsn.stem
    assert (stem.conv1.kernel_size, stem.conv1.stride, stem.conv1.bias) == ((3, 3), (2, 2), None)
    assert isinstance(stem.norm1, nn.BatchNorm2d) and isinstance(stem.act, nn.ReLU)
    assert (stem.conv2.kernel_size, stem.conv2.stride) == ((2, 2), (2, 2)) and stem.conv2.bias is not None
    assert stem.norm2.eps == 1e-5 and all(d.norm.eps == 1e-5 for d in hsn.downsamples)
    blk = hsn.stages[0][0]
    assert blk.norm1.eps == blk.norm2.eps == 1e-6 and all(n.eps == 1e-6 for n in hsn.norms)
    assert all(n.eps == 1e-6 for n in m.bridge.register_norms)
    # the stem's norm is configurable (SyncBN under DDP)
    sync = tiny_hst(stem_norm_cfg=dict(type='SyncBN'))
    assert isinstance(sync.side_network.stem.norm1, nn.SyncBatchNorm)
    # conv weights: normal(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels
    torch.manual_seed(0)
    big = HierarchicalSideNetwork([64, 128, 256, 384], [1, 1, 1, 1])
    w = big.downsamples[2].proj.weight                       # 3 x 3 x 384 fan-out
    assert w.std().item() == pytest.approx((2 / (9 * 384)) ** 0.5, rel=0.02)
    assert w.mean().abs().item() < 0.01 * (2 / (9 * 384)) ** 0.5 * 10


def test_meta_tokens_xavier_uniform_per_layer():
    """Each layer's (1, 1, D) token is xavier-uniform: U(-a, a), a = sqrt(6 / (D + D))."""
    torch.manual_seed(0)
    m = HSTViT(vit_kwargs=dict(TINY_VIT, embed_dim=256, num_heads=4), embed_dims=TINY_DIMS)
    t = m.meta_tokens.detach()
    bound = (6 / (2 * 256)) ** 0.5
    assert t.abs().max() <= bound and t.abs().max() > 0.9 * bound
    assert t.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.1)
    t2 = HSTViT(vit_kwargs=dict(TINY_VIT, embed_dim=256, num_heads=4), embed_dims=TINY_DIMS,
                meta_token_init='trunc_normal').meta_tokens
    assert t2.std().item() == pytest.approx(0.02, rel=0.1)


def test_drop_path_applies_to_the_frozen_vit_too():
    m = tiny_hst(drop_path_rate=0.3)
    rates = [float(getattr(b.drop_path1, 'drop_prob', 0.0)) for b in m.vit.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])              # linear over the ViT's blocks
    side = [float(b.drop_path.drop_prob) for s in m.side_network.stages for b in s if hasattr(b.drop_path, 'drop_prob')]
    assert side == pytest.approx([0.1, 0.2, 0.3])                   # and over the Side blocks (first: 0)
    m.train()
    m(torch.randn(2, 3, 64, 64))
    # in training the ViT's drop path is active, its frozen final norm and dropout are not
    assert m.vit.blocks[3].drop_path1.training and not m.vit.norm.training and not m.vit.pos_drop.training
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    a = m(x)[-1]
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x)[-1])
    # vit_drop_path_rate=0: the ViT stays deterministic while the Side blocks drop
    still = tiny_hst(drop_path_rate=0.3, vit_drop_path_rate=0.0)
    assert all(isinstance(b.drop_path1, nn.Identity) for b in still.vit.blocks)
    with pytest.raises(ValueError, match='vit_drop_path_rate'):
        tiny_hst(vit_kwargs=dict(TINY_VIT, drop_path_rate=0.1))


def test_option_errors_are_named():
    with pytest.raises(ValueError, match="stem 'conv' is not one of"):
        tiny_hst(stem='conv')
    with pytest.raises(ValueError, match="stem_channels applies to stem='conv_ln' only"):
        tiny_hst(stem_channels=8)
    with pytest.raises(ValueError, match="execution 'threads' is not one of"):
        tiny_hst(execution='threads')
    with pytest.raises(ValueError, match="meta_token_init 'zeros' is not one of"):
        tiny_hst(meta_token_init='zeros')


# --------------------------------------------------------------------------- parallel HST (Table 9)
def test_parallel_equals_serial_forward_and_gradients():
    serial = tiny_hst(out_indices=(0, 1, 2, 3))
    parallel = tiny_hst(execution='parallel')
    parallel.load_state_dict(serial.state_dict())
    scramble_trainable(serial)
    parallel.load_state_dict(serial.state_dict())
    x = torch.randn(2, 3, 70, 100)
    weights = None
    grads = []
    for m in (serial, parallel):
        m.train()
        outs = m(x)
        weights = weights or [torch.randn(o.shape, generator=torch.Generator().manual_seed(5)) for o in outs]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        grads.append(({n: p.grad for n, p in m.named_parameters() if p.requires_grad}, outs))
    (g_s, o_s), (g_p, o_p) = grads
    for a, b in zip(o_s, o_p):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert set(g_s) == set(g_p)
    for n in g_s:
        torch.testing.assert_close(g_p[n], g_s[n], rtol=1e-5, atol=1e-6, msg=n)
    # the running statistics of the stem's BatchNorm moved the same way
    torch.testing.assert_close(parallel.side_network.stem.norm1.running_mean,
                               serial.side_network.stem.norm1.running_mean)


def test_parallel_keeps_the_callers_grad_mode_and_reports_errors():
    m = tiny_hst(execution='parallel').eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 64, 64))
    assert not any(o.requires_grad for o in outs)       # no graph built in the side thread
    with torch.inference_mode():
        assert all(o.is_inference() for o in m(torch.randn(1, 3, 64, 64)))
    with pytest.raises(ValueError, match='smaller than one ViT patch'):
        m(torch.randn(1, 3, 8, 8))
    # an error in the side network's thread reaches the caller
    m.side_network.stages[1][0].attn.q = nn.Linear(3, 3)
    with pytest.raises(RuntimeError):
        m(torch.randn(1, 3, 64, 64))


# --------------------------------------------------------------------------- torch.compile
def test_no_graph_breaks_and_compiled_matches_eager():
    """One graph under dynamo, in training and eval, and the compiled model gives eager's values.
    (aot_eager traces through AOTAutograd like inductor; inductor's C++ build of even the tiny model
    takes minutes on the 2-core CI machine, the benchmark compares it.)"""
    m = tiny_hst(drop_path_rate=0.0).train()
    scramble_trainable(m)
    x = torch.randn(2, 3, 64, 96)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(x)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    # eval, fullgraph (any graph break is an error); parallel execution compiles as serial (threads
    # are not traced)
    m.eval()
    par = tiny_hst(drop_path_rate=0.0, execution='parallel').eval()
    par.load_state_dict(m.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(par, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        for a, b in zip(m(x), compiled(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
