"""ViTPyramid: a timm plain ViT with a simple multi-scale adaptation, for HST's comparison rows.

The paper's linear-probing and full fine-tuning rows (Tables 4, 5) adapt the single-scale ViT to FPN
"following [29]" (Li et al., *Benchmarking detection transfer learning with vision transformers*):
four resolution-modifying modules on the last layer's stride-16 feature map (after the ViT's
final norm)::

    stride 4:  ConvTranspose2d(D, D, 2, 2) - LayerNorm - GELU - ConvTranspose2d(D, D, 2, 2)
    stride 8:  ConvTranspose2d(D, D, 2, 2)
    stride 16: identity
    stride 32: MaxPool2d(2, 2)

all with ``D`` channels (so the neck takes ``in_channels=[D] * 4``). The norm between the two
deconvolutions is a LayerNorm (not [29]'s BatchNorm) so that batch size 1 trains like any other.
With ViT-B and the mmdet Mask R-CNN this gives 27.7M trainable parameters for linear probing
(paper: 27.8M) and 113.5M for full fine-tuning (paper: 113.6M).

``finetune='linear_probe'``: the whole ViT is frozen (and run without autograd, in eval mode); only
the four modules (and the toolbox's neck / heads) train. ``finetune='full'``: everything trains.

Inputs are padded / outputs cropped as in :class:`~mmpeft.backbones.HSTViT`: stage ``j`` is
``ceil(H / s_j) x ceil(W / s_j)``. Weights: ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in
any layout of :mod:`mmpeft.backbones.vit_checkpoint`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d

from ..peft.attachment import PEFTAttachment
from ..registry import MODELS
from .hst_vit import pretrained_checkpoint
from .timm_vit import (
    build_timm_vit,
    check_input,
    pad_to_multiple,
    stage_resolutions,
    vit_in_chans,
    vit_layer_outputs,
    vit_patch_size,
)
from .vit_checkpoint import LAYOUTS, load_vit_weights

FINETUNE_MODES = ('linear_probe', 'full')


@MODELS.register_module()
class ViTPyramid(BaseModule):
    """A timm ViT + [29]'s four resolution-modifying modules -> maps at strides 4, 8, 16, 32.

    Args:
        vit_name, vit_kwargs: the timm ViT, as in :class:`~mmpeft.backbones.HSTViT`.
        finetune: ``'linear_probe'`` (ViT frozen) or ``'full'`` (ViT trains too).
        out_indices: which of the four maps to return.
        pretrained, checkpoint_layout, init_cfg: the ViT checkpoint, as in ``HSTViT``.
    """

    strides = (4, 8, 16, 32)

    def __init__(self,
                 vit_name: str = 'vit_base_patch16_224',
                 vit_kwargs: Optional[dict] = None,
                 finetune: str = 'linear_probe',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 pretrained: Optional[str] = None,
                 checkpoint_layout: str = 'auto',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=None)
        if finetune not in FINETUNE_MODES:
            raise ValueError(f'ViTPyramid: finetune {finetune!r} is not one of {FINETUNE_MODES}')
        if checkpoint_layout not in LAYOUTS:
            raise ValueError(f'ViTPyramid: checkpoint_layout {checkpoint_layout!r} is not one of {LAYOUTS}')
        out_indices = tuple(sorted(set(out_indices)))
        if not out_indices or not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f'ViTPyramid: out_indices {list(out_indices)} must be stages 0-3')
        self.finetune = finetune
        self.out_indices = out_indices
        self.checkpoint, self.checkpoint_prefix = pretrained_checkpoint(pretrained, init_cfg, 'ViTPyramid')
        self.checkpoint_layout = checkpoint_layout
        self.vit = build_timm_vit(vit_name, **(vit_kwargs or {}))
        self.patch_size = vit_patch_size(self.vit)
        d = self.vit.embed_dim
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2), LayerNorm2d(d), nn.GELU(),
                                  nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(d, d, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)
        if finetune == 'linear_probe':
            # the frozen ViT behaves as pretrained: dropout / drop-path off in training
            PEFTAttachment(self).freeze([r'fpn1\.', r'fpn2\.'], eval_scope='vit')
        # finetune='full': every parameter trains (as built); a PEFTBackbone around it attaches a method

    def init_weights(self) -> None:
        """Load the ViT checkpoint (if any), strictly; the pyramid modules keep PyTorch's init."""
        if self.checkpoint is not None:
            load_vit_weights(self.vit, self.checkpoint, layout=self.checkpoint_layout,
                             prefix=self.checkpoint_prefix)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, 3, H, W)`` -> tuple of ``(B, D, ceil(H/s_j), ceil(W/s_j))`` for ``out_indices``."""
        check_input(x, self.patch_size, 'ViTPyramid', in_chans=vit_in_chans(self.vit))
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, (32, 32))
        hp, wp = x.shape[-2:]
        x = pad_to_multiple(x, self.patch_size)
        vit_grad = torch.is_grad_enabled() and self.finetune == 'full'
        with torch.set_grad_enabled(vit_grad):
            _, _, last = vit_layer_outputs(self.vit, x)
            last = self.vit.norm(last)
        b, _, d = last.shape
        gh, gw = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        fmap = last[:, self.vit.num_prefix_tokens:].transpose(1, 2).reshape(b, d, gh, gw)
        if (gh, gw) != (hp // 16, wp // 16):
            # patch sizes other than 16: bring the ViT grid to stride 16 of the padded image
            fmap = F.interpolate(fmap, size=(hp // 16, wp // 16), mode='bilinear', align_corners=False)
        maps = [self.fpn1(fmap), self.fpn2(fmap), self.fpn3(fmap), self.fpn4(fmap)]
        sizes = stage_resolutions(h, w, self.strides)
        maps = [m if tuple(m.shape[-2:]) == s else m[..., :s[0], :s[1]].contiguous()
                for m, s in zip(maps, sizes)]
        return tuple(maps[i] for i in self.out_indices)
