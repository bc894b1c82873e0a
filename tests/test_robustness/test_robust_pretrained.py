"""Issue #9 item 1: a PEFTBackbone's pretrained weights are really loaded, or the load is an error.

The example configs' backbones (shrunk to width 32, depths (1, 1, 2, 1)) load a synthetic checkpoint
in the official Microsoft Swin layout (random tensors under the official key names, derived from the
model here); every backbone weight must then equal the file's tensor through the test's own mapping."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmpeft.backbones import build_peft_backbone
from mmpeft.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EXAMPLES = osp.join(ROOT, 'configs', 'examples')
DIMS, DEPTHS, HEADS = 32, [1, 1, 2, 1], [1, 2, 4, 8]
# PatchMerging: the official code concatenates x0 = (h0, w0), x1 = (h1, w0), x2 = (h0, w1), x3 = (h1, w1)
# as 4 blocks of C channels; the toolboxes' nn.Unfold gives, per channel c, (h0,w0), (h0,w1), (h1,w0), (h1,w1).
OFFICIAL_BLOCK = {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}


def toolbox_to_official_key(key: str) -> str:
    for a, b in (('patch_embed.projection.', 'patch_embed.proj.'), ('.attn.w_msa.', '.attn.'),
                 ('.ffn.layers.0.0.', '.mlp.fc1.'), ('.ffn.layers.1.', '.mlp.fc2.')):
        key = key.replace(a, b)
    return re.sub(r'^stages\.', 'layers.', key)


def merging_columns(official: torch.Tensor, channels: int) -> torch.Tensor:
    """The toolbox tensor of a merging reduction weight (out, 4C) or norm (4C,) from the official one."""
    out = torch.empty_like(official)
    for (kh, kw), b in OFFICIAL_BLOCK.items():
        for c in range(channels):
            out[..., c * 4 + kh * 2 + kw] = official[..., b * channels + c]
    return out


def write_official(path: str, plain: torch.nn.Module):
    """An official-layout Swin file for ``plain``'s architecture, and the tensors each toolbox key
    must hold after loading it (``norm.*`` -> the last stage's output norm, where there is one)."""
    torch.manual_seed(1)
    official, expected = {}, {}
    for key, value in plain.state_dict().items():
        if re.match(r'norm\d+\.', key):
            continue  # per-output norms of the dense backbones: not in a classification checkpoint
        tensor = value.clone() if key.endswith('relative_position_index') else torch.randn_like(value)
        official[toolbox_to_official_key(key)] = tensor
        if 'downsample.' in key:
            tensor = merging_columns(tensor, tensor.shape[-1] // 4)
        expected[key] = tensor
    width = DIMS * 8
    official.update({'norm.weight': torch.randn(width), 'norm.bias': torch.randn(width),
                     'head.weight': torch.randn(10, width), 'head.bias': torch.randn(10)})
    if 'norm3.weight' in plain.state_dict() and 'norm0.weight' not in plain.state_dict():
        expected.update({'norm3.weight': official['norm.weight'], 'norm3.bias': official['norm.bias']})
    torch.save(dict(model=official), path)
    return expected


def example_backbone(name: str, checkpoint: str, **overrides):
    """The PEFTBackbone config of an example, shrunk, loading ``checkpoint``; and its default scope."""
    cfg = Config.fromfile(osp.join(EXAMPLES, name))
    bb = cfg.model.backbone
    inner = bb.backbone
    if 'arch' in inner:
        inner.arch = dict(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS)
        inner.img_size = 64
    else:
        inner.update(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS)
    inner.init_cfg.checkpoint = checkpoint
    bb.update(overrides)
    return bb, cfg.default_scope


@pytest.mark.parametrize('name', ['bitfit_upernet_swin-t_ade20k-512x512.py',
                                  'lntuning_mask-rcnn_swin-t_fpn_1x_coco.py', 'bitfit_swin-t_in1k.py'])
def test_example_config_loads_official_swin(name, tmp_path):
    path = str(tmp_path / 'swin_tiny_patch4_window7_224.pth')
    bb_cfg, scope = example_backbone(name, path)
    with DefaultScope.overwrite_default_scope(scope):
        plain_cfg = dict(bb_cfg.backbone)
        plain_cfg.pop('init_cfg')
        expected = write_official(path, MODELS.build(plain_cfg))
        model = MODELS.build(bb_cfg)
        model.init_weights()
    params = dict(model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and model.peft.trainable
    dense_norms = [n for n in frozen if re.match(r'norm\d\.', n) and n not in expected]
    assert set(frozen) - set(expected) == set(dense_norms)
    for key, want in expected.items():
        got = dict(model.state_dict())[key]
        assert torch.equal(got, want), key


def _tiny_swin(**kw):
    return dict(type='mmseg.SwinTransformer', embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS, window_size=4, **kw)


def test_vit_checkpoint_into_swin_names_weights_left_at_init(tmp_path):
    import timm
    vit = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0, depth=2, embed_dim=32,
                            num_heads=2, img_size=64)
    path = str(tmp_path / 'vit.pth')
    torch.save(vit.state_dict(), path)
    bb = build_peft_backbone(_tiny_swin(init_cfg=dict(type='Pretrained', checkpoint=path)), dict(type='BitFit'))
    with pytest.raises(KeyError) as e:
        bb.init_weights()
    msg = str(e.value)
    n_plain = sum(1 for n, _ in bb.named_parameters() if not re.match(r'norm\d\.', n))
    assert f'left {n_plain} of' in msg and path in msg
    assert 'patch_embed.projection.weight' in msg and 'blocks.0.attn.qkv.weight' in msg
    assert 'PretrainedSwin' in msg and 'swin2mmseg' in msg


@pytest.mark.parametrize('method', [None, dict(type='BitFit')], ids=['full-finetune', 'bitfit'])
def test_official_file_into_plain_mmseg_swin_is_an_error(method, tmp_path):
    path = str(tmp_path / 'official.pth')
    with DefaultScope.overwrite_default_scope('mmseg'):
        write_official(path, MODELS.build(_tiny_swin()))
    bb = build_peft_backbone(_tiny_swin(init_cfg=dict(type='Pretrained', checkpoint=path)), method)
    with pytest.raises(KeyError, match=r'left \d+ of .*stages\.0\.blocks\.0\.norm1\.weight.*layers\.0\.blocks'):
        bb.init_weights()


def test_values_equal_to_init_count_as_loaded_and_a_wrong_shape_does_not(tmp_path):
    """The load is observed, not compared: LayerNorm ones loaded from the file are loaded; one tensor
    of another shape (skipped by mmengine with strict=False) is named."""
    torch.manual_seed(0)
    plain = MODELS.build(_tiny_swin())
    state = plain.state_dict()
    path = str(tmp_path / 'own.pth')
    torch.save(dict(state_dict=state), path)
    bb = build_peft_backbone(_tiny_swin(init_cfg=dict(type='Pretrained', checkpoint=path)), dict(type='BitFit'))
    bb.init_weights()
    assert torch.equal(bb.stages[2].blocks[1].attn.w_msa.qkv.weight, state['stages.2.blocks.1.attn.w_msa.qkv.weight'])
    assert torch.equal(bb.norm2.weight, torch.ones(DIMS * 4))  # in the file: its init value, loaded

    state['stages.1.blocks.0.ffn.layers.1.weight'] = torch.zeros(3, 3)
    torch.save(dict(state_dict=state), path)
    bb = build_peft_backbone(dict(type='mmpretrain.SwinTransformer', arch=dict(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS),  # noqa: E501
                           img_size=64, window_size=4, out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type='Pretrained', checkpoint=path)), dict(type='BitFit'))
    with pytest.raises(KeyError, match=r'left 1 of .*stages\.1\.blocks\.0\.ffn\.layers\.1\.weight'):
        bb.init_weights()  # mmengine's load_checkpoint path (BaseModule + PretrainedInit)


def test_prefix_on_a_bare_file_names_file_prefix_and_fix(tmp_path):
    path = str(tmp_path / 'swin_tiny_patch4_window7_224.pth')
    bb_cfg, scope = example_backbone('bitfit_swin-t_in1k.py', path)
    with DefaultScope.overwrite_default_scope(scope):
        plain_cfg = dict(bb_cfg.backbone)
        plain_cfg.pop('init_cfg')
        write_official(path, MODELS.build(plain_cfg))
        bb_cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone')
        model = MODELS.build(bb_cfg)
        with pytest.raises(KeyError) as e:
            model.init_weights()
    msg = str(e.value)
    assert path in msg and "prefix 'backbone'" in msg and 'layers.0.blocks.0' in msg
    assert 'PretrainedOfficialSwin' in msg


def test_not_pretrained_typo_is_an_error():
    with pytest.raises(ValueError, match="not_pretrained pattern.*'stage9'"):
        build_peft_backbone(_tiny_swin(), dict(type='BitFit'), not_pretrained='stage9')


def test_weights_overwritten_after_the_load_count_as_not_loaded(tmp_path):
    """mmengine runs any initializer but type='Pretrained' before the children's init_weights, which
    re-draw e.g. mmpretrain's relative position bias tables: loaded, then overwritten, is not loaded."""
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.registry import WEIGHT_INITIALIZERS

    @WEIGHT_INITIALIZERS.register_module(name='RobustPretrainedTestEarlyLoad', force=True)
    class EarlyLoad(PretrainedInit):  # mmengine's own loading, minus the deferral
        pass

    arch = dict(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS)
    plain = MODELS.build(dict(type='mmpretrain.SwinTransformer', arch=arch, img_size=64, window_size=4))
    path = str(tmp_path / 'own.pth')
    torch.save(plain.state_dict(), path)
    bb = build_peft_backbone(dict(type='mmpretrain.SwinTransformer', arch=arch, img_size=64, window_size=4,
                           init_cfg=dict(type='RobustPretrainedTestEarlyLoad', checkpoint=path)), dict(type='BitFit'))
    with pytest.raises(KeyError, match=r'left 5 of .*re-initialised after the load.*relative_position_bias_table'):
        bb.init_weights()
