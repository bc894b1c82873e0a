"""Shared checks for the PEFT baseline tests: tiny backbones built by the real toolbox classes.

- ``swin``: mmseg ``SwinTransformer`` (embed 16, depths (1, 1, 2, 1), window 4); the test images
  (36 x 44) give 9 x 11 tokens, not divisible by the window, and block 2 of stage 3 shifts windows.
- ``mmpretrain_vit``: mmpretrain ``VisionTransformer`` (3 layers, width 32, patch 8, feature maps).
- ``timm_vit``: timm ``VisionTransformer`` inside mmpretrain's ``TIMMBackbone`` (features_only).
- ``mmdet_swin`` / ``mmpretrain_swin``: the other toolboxes' Swin, same sizes.
"""
import copy
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import mmpeft  # noqa: F401
from mmpeft.backbones import build_peft_backbone
from mmpeft.registry import MODELS
from mmpeft.utils.param_count import count_params

SWIN = dict(type='mmseg.SwinTransformer', embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
            window_size=4, drop_path_rate=0.)
MMPRETRAIN_VIT = dict(type='mmpretrain.VisionTransformer',
                      arch=dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64),
                      img_size=32, patch_size=8, out_indices=(1, 2), out_type='featmap')
TIMM_VIT = dict(type='mmpretrain.TIMMBackbone', model_name='vit_tiny_patch16_224', features_only=True,
                out_indices=(1, 2), img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                dynamic_img_size=True)
MMDET_SWIN = dict(SWIN, type='mmdet.SwinTransformer')
MMPRETRAIN_SWIN = dict(type='mmpretrain.SwinTransformer', window_size=4, img_size=64, out_indices=(0, 1, 2, 3),
                       arch=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)), pad_small_map=True)
BACKBONES = dict(swin=SWIN, mmpretrain_vit=MMPRETRAIN_VIT, timm_vit=TIMM_VIT, mmdet_swin=MMDET_SWIN,
                 mmpretrain_swin=MMPRETRAIN_SWIN)

SWIN_T = dict(type='mmseg.SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
              window_size=7)
TASKS = ['semseg', 'parts', 'sal', 'normals']


def images(kind: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = (36, 44) if kind.endswith('swin') else (32, 40)
    return torch.randn(batch, 3, *size, generator=g)


def build(kind: str, method: dict, seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """The PEFT backbone and a plain backbone with the same frozen weights, initialised, in eval mode
    (the plain one would otherwise drop paths where the PEFT one keeps its frozen modules in eval)."""
    torch.manual_seed(seed)
    peft = build_peft_backbone(copy.deepcopy(BACKBONES[kind]), copy.deepcopy(method))
    peft.init_weights()
    plain = MODELS.build(copy.deepcopy(BACKBONES[kind]))
    plain.init_weights()
    missing, unexpected = plain.load_state_dict(peft.state_dict(), strict=False)
    assert not missing, missing
    peft.eval()
    plain.eval()
    return peft, plain


def outputs(backbone: nn.Module, x: torch.Tensor, task=None) -> List[torch.Tensor]:
    out = backbone(x) if task is None else backbone(x, task=task)
    return list(out)


def max_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape, (u.shape, v.shape)
    return max((u - v).abs().max().item() for u, v in zip(a, b))


def injected_names(peft: nn.Module) -> List[str]:
    prefixes = list(peft.peft.injected)
    return [n for n, _ in peft.named_parameters() if any(n == p or n.startswith(p + '.') for p in prefixes)]


def check_keys(peft: nn.Module, plain: nn.Module) -> None:
    """Every plain key keeps its name; every new key lies under an injected module."""
    plain_keys, peft_keys = set(plain.state_dict()), set(peft.state_dict())
    assert plain_keys <= peft_keys, sorted(plain_keys - peft_keys)[:5]
    new = peft_keys - plain_keys
    prefixes = tuple(p + '.' for p in peft.peft.injected)
    assert all(k.startswith(prefixes) for k in new), sorted(k for k in new if not k.startswith(prefixes))[:5]


def check_trainable_is_injected(peft: nn.Module) -> None:
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable == set(injected_names(peft))
    assert trainable, 'nothing trains'


def loss_over_tasks(peft: nn.Module, x: torch.Tensor, num_tasks: int) -> torch.Tensor:
    total = 0.
    for t in range(num_tasks):
        outs = peft(x, task=t) if num_tasks > 1 else peft(x)
        total = total + sum((o.float() ** 2).mean() for o in outs)
    return total


def check_step(peft: nn.Module, x: torch.Tensor, num_tasks: int = 1) -> None:
    """One SGD step on *all* parameters changes only the trainable ones; each of them got a gradient
    in the forward (DDP-safe with find_unused_parameters=False)."""
    peft.train()
    before = {k: v.detach().clone() for k, v in peft.state_dict().items()}
    opt = torch.optim.SGD(peft.parameters(), lr=0.5)
    opt.zero_grad()
    loss_over_tasks(peft, x, num_tasks).backward()
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in peft.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'trainable parameters unused in the forward: {no_grad[:5]}'
    opt.step()
    after = peft.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, 'the step changed nothing'
    assert changed <= trainable, sorted(changed - trainable)[:5]
    peft.eval()


@torch.no_grad()
def perturb(peft: nn.Module, std: float = 0.05, seed: int = 1) -> None:
    """Move every trainable parameter away from its (often identity) initialisation."""
    g = torch.Generator().manual_seed(seed)
    for p in peft.parameters():
        if p.requires_grad:
            p.add_(std * torch.randn(p.shape, generator=g))


def encoder_trainable_millions(method: dict, backbone: Optional[dict] = None) -> float:
    """Encoder trainable parameters (M) of the full-size Swin-T + ``method``, as count_params quotes them."""
    bb = build_peft_backbone(copy.deepcopy(backbone or SWIN_T), copy.deepcopy(method))
    wrapper = nn.Module()
    wrapper.backbone = bb
    return count_params(wrapper)['Encoder']['trainable'] / 1e6


def names_matching(module: nn.Module, pattern: str) -> Dict[str, nn.Parameter]:
    rx = re.compile(pattern)
    return {n: p for n, p in module.named_parameters() if rx.search(n)}
