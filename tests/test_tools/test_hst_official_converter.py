"""Checkpoints of the HST authors' released model (ViT_HSN) -> mmpeft's HSTViT classifier.

The source is a random state dict in the released key layout written here from the layout's
description (not produced by the converter); the expected target of each key is a hand-written table.
"""
import argparse
import os.path as osp

import pytest
import torch

from mmpeft.backbones.hst_official_checkpoint import convert_hst_official, hst_official_config_hints, is_hst_official
from mmpeft_testing import run_as_main

TOOL = 'tools/model_converters/hst_official_to_mmpeft.py'
# tiny: ViT depth 4, width 32, patch 16, image 64 (4 x 4 tokens); side dims, 1 block per stage; 10 classes
L, D, PATCH, IMG = 4, 32, 16, 64
DIMS, DEPTHS, NUM_CLASSES = [16, 16, 24, 32], [1, 1, 1, 1], 10


def released_state_dict(num_meta_tokens: int = 1, seed: int = 0, vit_depth: int = L, vit_dim: int = D,
                        img: int = IMG, dims=tuple(DIMS), depths=tuple(DEPTHS), num_classes: int = NUM_CLASSES,
                        device: str = 'cpu') -> dict:
    """A random ``ViT_HSN`` state dict: every tensor distinct, shapes as the released model has them
    (``device='meta'``: shapes only)."""
    L, D, IMG, DIMS, DEPTHS, NUM_CLASSES = vit_depth, vit_dim, img, list(dims), list(depths), num_classes  # noqa: N806
    g = torch.Generator().manual_seed(seed)
    sd = {}
    counter = iter(range(1, 10 ** 6))

    def r(*shape):
        return torch.empty(*shape, device='meta') if device == 'meta' else torch.randn(*shape, generator=g)

    def linear(name, n_out, n_in):
        sd[name + '.weight'], sd[name + '.bias'] = r(n_out, n_in), r(n_out)

    def ln(name, n):
        sd[name + '.weight'], sd[name + '.bias'] = r(n), r(n)

    def bn_stats(name, n):
        sd[name + '.running_mean'], sd[name + '.running_var'] = r(n), r(n).abs() + 0.1
        sd[name + '.num_batches_tracked'] = torch.tensor(next(counter))

    # timm ViT
    sd['cls_token'] = r(1, 1, D)
    sd['pos_embed'] = r(1, 1 + (IMG // PATCH) ** 2, D)
    sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'] = r(D, 3, PATCH, PATCH), r(D)
    for i in range(L):
        ln(f'blocks.{i}.norm1', D)
        linear(f'blocks.{i}.attn.qkv', 3 * D, D)
        linear(f'blocks.{i}.attn.proj', D, D)
        ln(f'blocks.{i}.norm2', D)
        linear(f'blocks.{i}.mlp.fc1', 4 * D, D)
        linear(f'blocks.{i}.mlp.fc2', D, 4 * D)
    ln('norm', D)
    # HST
    for i in range(L):
        sd[f'm_embeddings.{i}'] = r(1, num_meta_tokens, D)
    d1 = DIMS[0]
    sd['m_patch_embed1.conv.0.weight'] = r(d1, 3, 3, 3)
    ln('m_patch_embed1.conv.1', d1)  # BatchNorm2d affine part
    bn_stats('m_patch_embed1.conv.1', d1)
    sd['m_patch_embed1.conv.3.weight'], sd['m_patch_embed1.conv.3.bias'] = r(d1, d1, 2, 2), r(d1)
    ln('m_patch_embed1.norm', d1)
    for j in (2, 3, 4):
        sd[f'm_patch_embed{j}.proj.weight'] = r(DIMS[j - 1], DIMS[j - 2], 3, 3)
        sd[f'm_patch_embed{j}.proj.bias'] = r(DIMS[j - 1])
        ln(f'm_patch_embed{j}.norm', DIMS[j - 1])
    for j in range(1, 5):
        d = DIMS[j - 1]
        for b in range(DEPTHS[j - 1]):
            p = f'm_block{j}.{b}'
            ln(p + '.norm1', d)
            for x in ('q', 'k', 'v', 'proj'):
                linear(f'{p}.attn.{x}', d, d)
            ln(p + '.norm2', d)
            linear(p + '.mlp.fc1', 4 * d, d)
            linear(p + '.mlp.fc2', d, 4 * d)
        ln(f'm_norm{j}', d)
        linear(f'T_Bridge_{j}', d, D)
    stage_of_layer = [j for j, n in enumerate(DEPTHS) for _ in range(n)]
    for i in range(L):
        ln(f'm_proj_norm{i + 1}', DIMS[stage_of_layer[i]])
    bn_stats('fc_norm', DIMS[-1])
    linear('head', NUM_CLASSES, DIMS[-1])
    return sd


def test_released_layout_has_the_released_count():
    """The layout written above, at ViT-B/16 + [32, 48, 64, 72] + 100 classes, has the trainable count of
    the authors' released model (issue 10: 772,140): every m_* / T_Bridge_* parameter, the ViT blocks'
    norm1 / norm2, the head; not the BatchNorm statistics."""
    sd = released_state_dict(vit_depth=12, vit_dim=768, img=224, dims=(32, 48, 64, 72), depths=(3, 3, 3, 3),
                             num_classes=100, device='meta')
    stats = ('running_mean', 'running_var', 'num_batches_tracked')
    trainable = [k for k in sd if not k.endswith(stats) and (
        k.startswith(('m_', 'T_Bridge_', 'head.')) or (k.startswith('blocks.') and '.norm' in k))]
    assert sum(sd[k].numel() for k in trainable) == 772_140


# released key -> mmpeft ImageClassifier key: samples of every rule, written out by hand
EXPECTED = {
    'cls_token': 'backbone.vit.cls_token',
    'pos_embed': 'backbone.vit.pos_embed',
    'patch_embed.proj.weight': 'backbone.vit.patch_embed.proj.weight',
    'blocks.0.norm1.weight': 'backbone.vit.blocks.0.norm1.weight',
    'blocks.3.attn.qkv.bias': 'backbone.vit.blocks.3.attn.qkv.bias',
    'blocks.2.mlp.fc2.weight': 'backbone.vit.blocks.2.mlp.fc2.weight',
    'norm.bias': 'backbone.vit.norm.bias',
    'T_Bridge_1.weight': 'backbone.bridge.linears.0.weight',
    'T_Bridge_3.bias': 'backbone.bridge.linears.2.bias',
    'T_Bridge_4.weight': 'backbone.bridge.linears.3.weight',
    'm_proj_norm1.weight': 'backbone.bridge.register_norms.0.weight',
    'm_proj_norm2.bias': 'backbone.bridge.register_norms.1.bias',
    'm_proj_norm4.weight': 'backbone.bridge.register_norms.3.weight',
    'm_patch_embed1.conv.0.weight': 'backbone.side_network.stem.conv1.weight',
    'm_patch_embed1.conv.1.weight': 'backbone.side_network.stem.norm1.weight',
    'm_patch_embed1.conv.1.running_var': 'backbone.side_network.stem.norm1.running_var',
    'm_patch_embed1.conv.1.num_batches_tracked': 'backbone.side_network.stem.norm1.num_batches_tracked',
    'm_patch_embed1.conv.3.weight': 'backbone.side_network.stem.conv2.weight',
    'm_patch_embed1.conv.3.bias': 'backbone.side_network.stem.conv2.bias',
    'm_patch_embed1.norm.weight': 'backbone.side_network.stem.norm2.weight',
    'm_patch_embed1.norm.bias': 'backbone.side_network.stem.norm2.bias',
    'm_patch_embed2.proj.weight': 'backbone.side_network.downsamples.0.proj.weight',
    'm_patch_embed3.norm.bias': 'backbone.side_network.downsamples.1.norm.bias',
    'm_patch_embed4.proj.bias': 'backbone.side_network.downsamples.2.proj.bias',
    'm_block1.0.attn.q.weight': 'backbone.side_network.stages.0.0.attn.q.weight',
    'm_block2.0.attn.k.bias': 'backbone.side_network.stages.1.0.attn.k.bias',
    'm_block3.0.attn.v.weight': 'backbone.side_network.stages.2.0.attn.v.weight',
    'm_block4.0.mlp.fc1.weight': 'backbone.side_network.stages.3.0.mlp.fc1.weight',
    'm_block1.0.norm2.bias': 'backbone.side_network.stages.0.0.norm2.bias',
    'm_block4.0.attn.proj.bias': 'backbone.side_network.stages.3.0.attn.proj.bias',
    'm_norm1.weight': 'backbone.side_network.norms.0.weight',
    'm_norm2.bias': 'backbone.side_network.norms.1.bias',
    'm_norm4.weight': 'backbone.side_network.norms.3.weight',
    'fc_norm.running_mean': 'backbone.fc_norm.running_mean',
    'fc_norm.running_var': 'backbone.fc_norm.running_var',
    'fc_norm.num_batches_tracked': 'backbone.fc_norm.num_batches_tracked',
    'head.weight': 'head.fc.weight',
    'head.bias': 'head.fc.bias',
}


def _assert_bijection(src: dict, out: dict, skip_src=lambda k: k.startswith('m_embeddings.')) -> None:
    """Each source tensor (every one distinct) appears under exactly one output key, and each output
    key but ``meta_tokens`` holds one source tensor: nothing dropped, duplicated or invented."""
    used = set()
    for k, v in src.items():
        if skip_src(k):
            continue
        hits = [o for o, t in out.items() if t.shape == v.shape and t.dtype == v.dtype and torch.equal(t, v)]
        assert len(hits) == 1, f'{k} found under {hits}'
        used.add(hits[0])
    assert set(out) - used == {k for k in out if k.endswith('meta_tokens')}


def test_convert_maps_every_rule():
    sd = released_state_dict()
    out = convert_hst_official(sd)
    for src, dst in EXPECTED.items():
        assert torch.equal(out[dst], sd[src]), (src, dst)
    meta = torch.stack([sd[f'm_embeddings.{i}'][0] for i in range(L)])  # (L, 1, D) in layer order
    assert out['backbone.meta_tokens'].shape == (L, 1, D)
    assert torch.equal(out['backbone.meta_tokens'], meta)
    assert len(out) == len(sd) - L + 1  # L meta tokens -> 1 tensor
    _assert_bijection(sd, out)


def test_convert_several_meta_tokens_per_layer():
    sd = released_state_dict(num_meta_tokens=3)
    out = convert_hst_official(sd)
    assert out['backbone.meta_tokens'].shape == (L, 3, D)
    for i in range(L):
        assert torch.equal(out['backbone.meta_tokens'][i], sd[f'm_embeddings.{i}'][0])


def test_backbone_only_conversion_leaves_out_the_head_only():
    sd = released_state_dict()
    out = convert_hst_official(sd, backbone_prefix='', head_prefix=None)
    assert not any(k.startswith('head') for k in out)
    assert torch.equal(out['side_network.stem.conv1.weight'], sd['m_patch_embed1.conv.0.weight'])
    assert torch.equal(out['fc_norm.running_var'], sd['fc_norm.running_var'])
    assert torch.equal(out['vit.blocks.1.attn.proj.weight'], sd['blocks.1.attn.proj.weight'])
    assert len(out) == len(sd) - L + 1 - 2
    _assert_bijection(sd, out, skip_src=lambda k: k.startswith(('m_embeddings.', 'head.')))


def test_leftover_keys_are_named():
    sd = released_state_dict()
    sd['m_block1.0.attn.qkv.weight'] = torch.zeros(48, 16)  # a fused qkv the released side blocks lack
    with pytest.raises(ValueError, match=r'm_block1\.0\.attn\.qkv\.weight') as e:
        convert_hst_official(sd)
    assert 'no rule' in str(e.value)
    # many: a sample of 10 and the count
    sd = released_state_dict()
    sd.update({f'extra.{i:02d}': torch.zeros(1) for i in range(25)})
    with pytest.raises(ValueError) as e:
        convert_hst_official(sd)
    msg = str(e.value)
    assert 'extra.00' in msg and 'extra.09' in msg and 'extra.10' not in msg and '25 in all' in msg


@pytest.mark.parametrize('drop, named', [
    (['m_block2.0.attn.k.bias'], r'm_block2\.0\.attn\.k\.bias'),
    (['fc_norm.running_var'], r'fc_norm\.running_var'),
    (['head.bias'], r'head\.bias'),
    (['blocks.2.norm1.weight'], r'blocks\.2\.norm1\.weight'),
    ([f'm_embeddings.{i}' for i in range(L)], r'm_embeddings\.0'),
    (['m_proj_norm4.weight', 'm_proj_norm4.bias'], r'm_proj_norm: 3 LayerNorms .* for 4 ViT layers'),
    (['m_embeddings.3'], r'm_embeddings: 3 tokens for 4 ViT layers'),
    (['T_Bridge_3.weight'], r'T_Bridge_3\.weight'),
])
def test_missing_keys_are_named(drop, named):
    sd = released_state_dict()
    for k in drop:
        del sd[k]
    with pytest.raises(ValueError, match=named) as e:
        convert_hst_official(sd)
    assert 'missing' in str(e.value)


def test_index_gap_is_named():
    sd = released_state_dict()
    for k in [k for k in sd if k.startswith('m_block3.0.')]:  # stage 3 holds block 1 but not block 0
        sd['m_block3.1.' + k[len('m_block3.0.'):]] = sd.pop(k)
    with pytest.raises(ValueError, match=r'm_block3\.0 \(the dict has m_block3\.1'):
        convert_hst_official(sd)
    sd = released_state_dict()
    sd.pop('m_embeddings.1')
    sd['m_embeddings.4'] = torch.zeros(1, 1, D)
    with pytest.raises(ValueError, match=r'm_embeddings\.1 \('):
        convert_hst_official(sd)


def test_unequal_meta_tokens_are_named():
    sd = released_state_dict()
    sd['m_embeddings.2'] = torch.zeros(1, 2, D)
    with pytest.raises(ValueError, match=r'm_embeddings\.2 \(1, 2, 32\)'):
        convert_hst_official(sd)


def test_is_hst_official():
    sd = released_state_dict()
    assert is_hst_official(sd)
    vit_only = {k: v for k, v in sd.items() if not k.startswith(('m_', 'T_Bridge', 'fc_norm', 'head'))}
    assert not is_hst_official(vit_only)
    assert not is_hst_official(convert_hst_official(sd))


def test_config_hints():
    hints = hst_official_config_hints(released_state_dict(num_meta_tokens=2))
    assert hints == dict(vit_depth=4, vit_embed_dim=32, vit_patch_size=16, vit_img_size=64,
                         embed_dims=[16, 16, 24, 32], depths=[1, 1, 1, 1], num_meta_tokens=2, mlp_ratio=4.0,
                         num_classes=10)
    with pytest.raises(ValueError, match='m_patch_embed1'):
        hst_official_config_hints({'cls_token': torch.zeros(1, 1, D)})


# --------------------------------------------------------------------------- the command line
def _write_config(path, num_classes: int = NUM_CLASSES) -> str:
    path.write_text(f"""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='HSTViT', vit_name='vit_base_patch16_224',
                  vit_kwargs=dict(depth={L}, embed_dim={D}, num_heads=2, img_size={IMG}),
                  embed_dims={DIMS}, num_heads=[2, 2, 2, 2], depths={DEPTHS}, out_type='pooled',
                  init_cfg=dict(type='Pretrained', checkpoint='pretrain/not_there.pth')),
    neck=None,
    head=dict(type='LinearClsHead', num_classes={num_classes}, in_channels={DIMS[-1]}))
""")
    return str(path)


def _ok(res):
    assert res.returncode == 0, f'{res.args} exited {res.returncode}:\n{res.stderr[-3000:]}'
    return res.stdout


def test_cli_without_config(tmp_path):
    sd = released_state_dict()
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': sd}, src)
    stdout = _ok(run_as_main(TOOL, src, dst))
    assert 'embed_dims=[16, 16, 24, 32], depths=[1, 1, 1, 1], num_meta_tokens=1' in stdout
    assert 'num_classes=10, in_channels=32' in stdout
    ckpt = torch.load(dst, map_location='cpu', weights_only=False)
    assert ckpt['meta']['hst_official']['source'] == str(src)
    for s, d in EXPECTED.items():
        assert torch.equal(ckpt['state_dict'][d], sd[s]), (s, d)
    # refusing to overwrite the source
    res = run_as_main(TOOL, src, src)
    assert res.returncode != 0 and 'the same file' in res.stderr
    assert torch.load(src, weights_only=False)['state_dict'].keys() == sd.keys()


class Opaque:
    """A class no safe loader knows."""


def test_cli_deit_style_file_loads_safely(tmp_path):
    """A file of a DeiT-style script ({'model': ..., 'args': Namespace}) loads with the safe loader
    (argparse.Namespace is allowed); anything else pickled in it is still refused unless trusted."""
    sd = released_state_dict()
    src, dst = tmp_path / 'checkpoint.pth', tmp_path / 'converted.pth'
    torch.save({'model': sd, 'epoch': 99, 'args': argparse.Namespace(lr=1e-3, model='vit_base')}, src)
    _ok(run_as_main(TOOL, src, dst))
    out = torch.load(dst, weights_only=False)['state_dict']
    assert torch.equal(out['backbone.side_network.stages.2.0.attn.v.bias'], sd['m_block3.0.attn.v.bias'])
    torch.save({'model': sd, 'args': argparse.Namespace(lr=1e-3), 'extra': Opaque()}, src)
    res = run_as_main(TOOL, src, str(dst) + '.2')
    assert res.returncode != 0 and 'Opaque' in res.stderr
    _ok(run_as_main(TOOL, src, str(dst) + '.2', '--trust-checkpoints'))


def test_cli_round_trip_loads_strictly(tmp_path):
    """Converted with --config: the model of the config loads it strictly, and the loaded model holds the
    source tensors under the hand-written mapping."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmpeft.registry import MODELS
    sd = released_state_dict()
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': sd}, src)
    config = _write_config(tmp_path / 'tiny_hst_cls.py')
    stdout = _ok(run_as_main(TOOL, src, dst, '--config', config))
    assert 'loads strictly' in stdout
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(config).model)
    model.load_state_dict(torch.load(dst, weights_only=False)['state_dict'], strict=True)
    loaded = model.state_dict()
    for s, d in EXPECTED.items():
        assert torch.equal(loaded[d], sd[s]), (s, d)
    assert torch.equal(loaded['backbone.meta_tokens'], torch.cat([sd[f'm_embeddings.{i}'] for i in range(L)]))
    _assert_bijection(sd, loaded)


def test_cli_wrong_num_classes_names_the_head(tmp_path):
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save(released_state_dict(), src)  # a bare state dict
    config = _write_config(tmp_path / 'tiny_hst_cls_100.py', num_classes=100)
    res = run_as_main(TOOL, src, dst, '--config', config)
    assert res.returncode != 0 and not osp.exists(dst)
    assert 'head.fc.weight (checkpoint (10, 32), model (100, 32))' in res.stderr
    assert 'model.head (num_classes' in res.stderr


def test_hstvit_init_cfg_reads_the_released_file_directly(tmp_path):
    """checkpoint_layout='hst_official': the backbone is filled from the authors' file (everything but
    the classifier), strictly; a backbone built differently names the keys and how to find the dims."""
    from mmpeft.backbones import HSTViT
    sd = released_state_dict()
    src = tmp_path / 'checkpoint.pth'
    torch.save({'model': sd, 'args': argparse.Namespace(lr=1e-3)}, src)
    kw = dict(vit_kwargs=dict(depth=L, embed_dim=D, num_heads=2, img_size=IMG), embed_dims=DIMS, depths=DEPTHS,
              num_heads=[2, 2, 2, 2])
    m = HSTViT(**kw, out_type='pooled', checkpoint_layout='hst_official',
               init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    m.init_weights()
    got = m.state_dict()
    for theirs, ours in EXPECTED.items():
        if ours.startswith('backbone.'):
            torch.testing.assert_close(got[ours[len('backbone.'):]], sd[theirs], rtol=0, atol=0, msg=theirs)
    torch.testing.assert_close(got['meta_tokens'], torch.cat([sd[f'm_embeddings.{i}'] for i in range(L)]))
    # a dense (featmap) backbone takes the same file without the classifier's fc_norm
    dense = HSTViT(**kw, checkpoint_layout='hst_official', init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    dense.init_weights()
    torch.testing.assert_close(dense.side_network.norms[3].weight, sd['m_norm4.weight'], rtol=0, atol=0)
    wrong = HSTViT(**dict(kw, embed_dims=[16, 16, 24, 48]), out_type='pooled', checkpoint_layout='hst_official',
                   init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    with pytest.raises(KeyError, match=r'shapes .*bridge\.linears\.3\.bias: file \(32,\), model \(48,\).*embed_dims'):
        wrong.init_weights()
