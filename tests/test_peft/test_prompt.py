"""VPT: prompt tokens in plain ViTs (token insertion, as the paper) and in Swin (extra keys / values
of every window, under shifted windows and sizes not divisible by the window); counts on Swin-T."""
import copy

import pytest
import timm
import torch
from peft_checks import (
    SWIN,
    TASKS,
    build,
    encoder_trainable_millions,
    images,
    max_diff,
    outputs,
    perturb,
)

from mmpeft.peft.attachment import PEFTAttachment
from mmpeft.peft.layout import override_window_attention
from mmpeft.peft.prompt import VPT
from mmpeft.registry import MODELS, PEFT_METHODS


def test_swin_window_attention_reimplementation_is_exact():
    """Without prompts the overridden windowed attention computes what the toolbox's does."""
    torch.manual_seed(0)
    cfg = dict(SWIN, depths=(2, 2, 2, 2))
    plain = MODELS.build(cfg)
    plain.init_weights()
    plain.eval()
    other = copy.deepcopy(plain)
    for m in other.modules():
        if hasattr(m, 'relative_position_bias_table'):
            override_window_attention(m)
    x = torch.randn(2, 3, 60, 76)  # 15 x 19 tokens: padding in every stage, shifts in every stage
    with torch.no_grad():
        assert max_diff(list(other(x)), list(plain(x))) < 1e-6


@pytest.mark.parametrize('size', [(60, 76), (64, 64), (20, 28)])
def test_swin_prompts_with_shifted_windows_and_padding(size):
    cfg = dict(SWIN, depths=(2, 2, 2, 2))
    from mmpeft.backbones import build_peft_backbone
    torch.manual_seed(0)
    peft = build_peft_backbone(cfg, dict(type='VPTDeep', num_tokens=4))
    peft.init_weights()
    x = torch.randn(2, 3, *size)
    outs = peft(x)
    assert [o.shape[-2:] for o in outs] == [torch.Size([-(-size[0] // s), -(-size[1] // s)])
                                            for s in (4, 8, 16, 32)]
    sum(o.pow(2).mean() for o in outs).backward()
    grads = {n: p.grad for n, p in peft.named_parameters() if p.requires_grad}
    assert len(grads) == 8 and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_swin_prompt_is_seen_from_every_window():
    """A prompt is a key/value of every window, whatever the shift mask: perturbing it moves every token."""
    from mmpeft.backbones import build_peft_backbone
    torch.manual_seed(0)
    peft = build_peft_backbone(dict(SWIN, depths=(2, 1, 1, 1), out_indices=(0,)), dict(type='VPTDeep', num_tokens=2))
    peft.init_weights()
    peft.eval()
    x = torch.randn(1, 3, 64, 64)  # 16 x 16 tokens, 16 windows; block 1 shifts
    with torch.no_grad():
        before = peft(x)[0]
        peft.stages[0].blocks[1].vpt.prompts.add_(1.0)  # the shifted block's prompts only
        after = peft(x)[0]
    moved = (after - before).abs().sum(1)[0]  # (16, 16) per token
    assert (moved > 0).all()


def _timm_manual(vit, x, prompts, deep):
    """VPT written out by hand on a timm ViT: the reference for the hook-based insertion (``forward``
    called directly, so the blocks' hooks do not run)."""
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    n = prompts[0].shape[0]
    if deep:
        for blk, p in zip(vit.blocks, prompts):
            x = blk.forward(torch.cat([x, p.expand(x.shape[0], -1, -1)], 1))[:, :-n]
    else:
        x = torch.cat([x, prompts[0].expand(x.shape[0], -1, -1)], 1)
        for blk in vit.blocks:
            x = blk.forward(x)
        x = x[:, :-n]
    return vit.norm(x)


@pytest.mark.parametrize('deep', [True, False])
def test_timm_token_insertion_matches_the_written_out_vpt(deep):
    torch.manual_seed(0)
    vit = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=32, depth=3,
                            num_heads=2, num_classes=0)
    vit.eval()
    method = PEFT_METHODS.build(dict(type='VPT', num_tokens=3, deep=deep))
    peft = PEFTAttachment.attach(vit, method)
    prompts = [vit.get_submodule(n).prompts[0] for n in peft.injected]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff([vit.forward_features(x)], [_timm_manual(vit, x, prompts, deep)]) < 1e-6


def test_vpt_bad_config():
    with pytest.raises(ValueError, match='num_tokens'):
        VPT(num_tokens=0)


def test_counts_swin_t_4_tasks():
    """Polyhistor Table 1: VPT-shallow 0.02M, VPT-deep 0.88M (50 prompts per layer, 4 tasks)."""
    deep = encoder_trainable_millions(dict(type='VPTDeep', tasks=TASKS))
    shallow = encoder_trainable_millions(dict(type='VPTShallow', tasks=TASKS))
    assert deep == 50 * 4416 * 4 / 1e6 and abs(deep / 0.88 - 1) < 0.05
    assert shallow == 50 * 96 * 4 / 1e6 and abs(shallow / 0.02 - 1) < 0.05


def test_prompted_window_attention_is_a_visible_class_that_pickles():
    """VPT on Swin: the window attention's class says what runs (the toolbox's WindowMSA + mmpeft's
    extras), the model pickles whole, and detach gives the toolbox class back."""
    import io

    from mmpeft.peft.layout import WindowAttentionExtras
    peft, plain = build('swin', dict(type='VPTDeep', num_tokens=3))
    perturb(peft)
    w_msa = peft.stages[0].blocks[0].attn.w_msa
    assert isinstance(w_msa, WindowAttentionExtras) and type(w_msa).forward is WindowAttentionExtras.forward
    assert type(w_msa).toolbox_class is type(plain.stages[0].blocks[0].attn.w_msa)
    buf = io.BytesIO()
    torch.save(peft, buf)
    buf.seek(0)
    copy_ = torch.load(buf, weights_only=False)
    x = images('swin')
    with torch.no_grad():
        assert max_diff(outputs(copy_, x), outputs(peft, x)) == 0
    peft.peft.detach()
    assert type(w_msa) is type(plain.stages[0].blocks[0].attn.w_msa)


def test_vpt_shallow_on_a_plain_vit_under_with_cp_gives_the_same_gradients():
    """The prompt states carried from block to block are inputs and outputs of each checkpointed block:
    the prompts' gradient (which reaches them through every later block) equals the one without with_cp."""
    import copy

    from mmpeft.backbones import build_peft_backbone
    vit = dict(type='mmpretrain.TIMMBackbone', model_name='vit_tiny_patch16_224', features_only=True,
               out_indices=(0, 1, 2), img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        bb = build_peft_backbone(copy.deepcopy(vit), dict(type='VPTShallow', num_tokens=3, tasks=['a', 'b']),
                                 with_cp=with_cp)
        assert bool(bb.peft.checkpointed) == with_cp
        bb.train()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        # only the last feature map: the prompts reach it through blocks 1 and 2 (carried states)
        loss = sum(bb(x, task=t)[-1].square().mean() for t in ('a', 'b'))
        loss.backward()
        grads.append(bb.timm_model.model.blocks[0].vpt.prompts.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
