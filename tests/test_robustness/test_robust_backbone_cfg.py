"""Issue #9 items 11 (in part), 12 and the out_indices case: PEFTBackbone / HSTViT inputs.

Upstream mmseg configs set a segmentor-level ``model.pretrained`` that mmseg's EncoderDecoder copies
into the backbone config; the tests build mmseg's own ``sem_fpn`` config with the backbone replaced."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

from mmpeft.backbones import build_peft_backbone
from mmpeft.registry import MODELS

SWIN = dict(type='SwinTransformer', embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=4)
BASE = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
UPSTREAM = 'open-mmlab://resnet50_v1c'


def sem_fpn(tmp_path, backbone: str, extra: str = ''):
    """mmseg's Semantic FPN config (model.pretrained = the ResNet's) with ``backbone`` put in."""
    path = tmp_path / 'cfg.py'
    path.write_text(f"_base_ = ['{BASE}']\ncustom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)\n"
                    f"model = dict(backbone=dict(_delete_=True, **{backbone}),\n"
                    f"             neck=dict(in_channels=[16, 32, 64, 128]){extra})\n")
    cfg = Config.fromfile(str(path))
    assert cfg.model.pretrained == UPSTREAM or 'pretrained' in extra
    init_default_scope('mmseg')
    return cfg


def test_segmentor_pretrained_is_passed_on_to_the_inner_backbone(tmp_path):
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        state = MODELS.build(SWIN).state_dict()
    ckpt = str(tmp_path / 'swin.pth')
    torch.save(dict(state_dict=state), ckpt)
    bb = dict(type='PEFTBackbone', method=dict(type='BitFit'), backbone=SWIN)
    cfg = sem_fpn(tmp_path, repr(bb), extra=f', pretrained={ckpt!r}')
    model = MODELS.build(cfg.model)
    assert model.backbone.init_cfg['checkpoint'] == ckpt
    model.init_weights()
    key = 'stages.2.blocks.1.attn.w_msa.qkv.weight'
    assert torch.equal(model.backbone.state_dict()[key], state[key])


def test_inner_backbone_without_pretrained_argument_gets_init_cfg():
    """mmpretrain's Swin has no ``pretrained`` argument: the checkpoint becomes its init_cfg."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        bb = build_peft_backbone(dict(type='mmpretrain.SwinTransformer', img_size=64, window_size=4,
                               arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])),
                          dict(type='BitFit'), pretrained='pretrain/swin.pth')
    assert bb.init_cfg == dict(type='Pretrained', checkpoint='pretrain/swin.pth')


def test_upstream_pretrained_next_to_the_backbones_own_checkpoint_is_an_error(tmp_path):
    own = dict(SWIN, init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin.pth'))
    cfg = sem_fpn(tmp_path, repr(dict(type='PEFTBackbone', method=dict(type='BitFit'), backbone=own)))
    with pytest.raises(ValueError) as e:
        MODELS.build(cfg.model)
    msg = str(e.value)
    assert UPSTREAM in msg and 'pretrain/swin.pth' in msg and 'model.pretrained=None' in msg


@pytest.mark.parametrize('wrapped', [False, True], ids=['HSTViT', 'build_peft_backbone(HSTViT)'])
def test_hst_vit_rejects_a_download_name(tmp_path, wrapped):
    hst = dict(type='HSTViT', vit_kwargs=dict(depth=4, embed_dim=32, num_heads=2, img_size=64),
               embed_dims=[16, 32, 64, 128])
    bb = dict(type='PEFTBackbone', method=dict(type='FrozenBackbone'), backbone=hst) if wrapped else hst
    cfg = sem_fpn(tmp_path, repr(bb))
    with pytest.raises(ValueError) as e:
        MODELS.build(cfg.model)
    msg = str(e.value)
    assert f"pretrained='{UPSTREAM}'" in msg and 'model.pretrained=None' in msg and 'init_cfg' in msg


def test_init_weights_keeps_what_was_enabled_after_the_build():
    """PEFTFreezeHook's before_run runs before the runner's init_weights; the load must not undo it."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        bb = build_peft_backbone(SWIN, dict(type='BitFit'))
    extra = bb.stages[0].blocks[0].norm1.weight
    bias = bb.stages[1].blocks[0].attn.w_msa.qkv.bias
    assert not extra.requires_grad and bias.requires_grad
    extra.requires_grad_(True)
    bias.requires_grad_(False)
    want = {n: p.requires_grad for n, p in bb.named_parameters()}
    bb.init_weights()
    assert {n: p.requires_grad for n, p in bb.named_parameters()} == want
    assert extra.requires_grad and not bias.requires_grad


@pytest.mark.parametrize('backbone, stages', [
    (dict(SWIN, type='mmseg.SwinTransformer', out_indices=(0, 1, 2, 4)), 4),
    (dict(SWIN, type='mmseg.SwinTransformer', out_indices=(0, 1, 2, -1)), 4),  # mmseg: silently 3 maps
    (dict(type='mmpretrain.SwinTransformer', img_size=64, window_size=4, out_indices=(-1,),
          arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])), 4),  # no output at all
    (dict(type='mmseg.ResNet', depth=18, out_indices=(0, 1, 5)), 4),
    (dict(type='mmseg.VisionTransformer', img_size=32, patch_size=16, embed_dims=32, num_layers=2,
          num_heads=2, out_indices=(1, 2)), 2),
], ids=['swin', 'swin-negative', 'mmpretrain-swin-negative', 'resnet', 'vit'])
def test_out_indices_beyond_the_stages(backbone, stages):
    with pytest.raises(ValueError) as e:
        build_peft_backbone(backbone, dict(type='BitFit'))
    msg = str(e.value)
    assert f'out_indices={tuple(backbone["out_indices"])}' in msg
    assert f'{stages} stages' in msg and f'0..{stages - 1}' in msg


def test_out_indices_normalised_by_the_backbone_are_accepted():
    """mmpretrain's ViT turns -1 into the last layer itself: no false error."""
    bb = build_peft_backbone(dict(type='mmpretrain.VisionTransformer', img_size=32, patch_size=16, out_indices=[-1],
                           arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)),
                      dict(type='BitFit'))
    assert list(bb.out_indices) == [1]
    assert len(bb(torch.zeros(1, 3, 32, 32))) == 1
