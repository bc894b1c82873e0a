"""ViTEncoder: the timm ViT's class token (or mean patch token) after the final norm, loaded strictly."""
import pytest
import torch

import mmpeft  # noqa: F401
from mmpeft.backbones import ViTEncoder, build_peft_backbone

TINY = dict(vit_name='vit_base_patch16_224', vit_kwargs=dict(depth=2, embed_dim=32, num_heads=2, img_size=32,
                                                             patch_size=8))


def test_outputs_equal_timms_own_forward():
    torch.manual_seed(0)
    enc = ViTEncoder(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = enc.vit.forward_features(x)  # timm's forward: embed, blocks, final norm
        (cls,) = enc(x)
    assert cls.shape == (2, 32) and torch.allclose(cls, ref[:, 0], atol=1e-6)


def test_avg_featmap_is_the_mean_patch_token():
    torch.manual_seed(0)
    enc = ViTEncoder(**TINY, out_type='avg_featmap').eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = enc.vit.forward_features(x)[:, enc.vit.num_prefix_tokens:].mean(1)
        assert torch.allclose(enc(x)[0], ref, atol=1e-6)


def test_checkpoint_loads_strictly_and_bad_options_are_named(tmp_path):
    torch.manual_seed(0)
    src = ViTEncoder(**TINY)
    path = str(tmp_path / 'vit.pth')
    torch.save(src.vit.state_dict(), path)  # a timm-layout file
    dst = ViTEncoder(**TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    dst.init_weights()
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    torch.save({k: v for k, v in src.vit.state_dict().items() if 'blocks.1.' not in k}, path)
    with pytest.raises(KeyError, match='blocks.1'):
        ViTEncoder(**TINY, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    with pytest.raises(ValueError, match='out_type'):
        ViTEncoder(**TINY, out_type='featmap')


def test_a_peft_method_attaches_to_its_blocks():
    bb = build_peft_backbone(dict(type='ViTEncoder', **TINY), dict(type='LoRA', rank=2, targets=('q', 'v')))
    assert [n for n, p in bb.named_parameters() if p.requires_grad] == [
        f'vit.blocks.{i}.attn.lora_{t}.{m}' for i in range(2) for t in 'qv' for m in 'AB']
