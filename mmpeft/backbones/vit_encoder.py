"""ViTEncoder: a timm plain ViT as an image-classification backbone, for the PEFT baseline rows.

The baseline rows of HST's classification tables (full fine-tuning, linear probing, Adapter, BitFit,
VPT, LoRA, AdaptFormer, SSF; Tables 2 and 3) are the VPT / SSF / NOAH codebases' timm ViT-B/16 with a
linear head on the final-normed class token. This backbone is that ViT, loading the checkpoints users
have (timm in21k / AugReg, MAE, mmpretrain, mmseg layouts: :mod:`mmpeft.backbones.vit_checkpoint`) at
``init_weights``, strictly, and returning the feature the head reads, as mmpretrain's
``VisionTransformer`` does with its ``out_type``. A PEFT method attaches to it through
``PEFTBackbone`` like to any other backbone (its blocks are timm's).
"""
from typing import Optional, Tuple

import torch
from mmengine.model import BaseModule

from ..registry import MODELS
from .hst_vit import pretrained_checkpoint
from .timm_vit import build_timm_vit, check_input, iter_vit_layers, pad_to_multiple, vit_in_chans, vit_patch_size
from .vit_checkpoint import LAYOUTS, load_vit_weights

OUT_TYPES = ('cls_token', 'avg_featmap')


@MODELS.register_module()
class ViTEncoder(BaseModule):
    """A timm ViT returning one vector per image: ``((B, D),)``.

    Args:
        vit_name, vit_kwargs: the timm ViT (``vit_base_patch16_224``; ``vit_kwargs`` e.g.
            ``dict(drop_path_rate=0.1)``), as in :class:`~mmpeft.backbones.HSTViT`.
        out_type: ``'cls_token'`` (default; the final-normed class token, the VPT / SSF heads' input)
            or ``'avg_featmap'`` (the mean of the final-normed patch tokens, timm's ``global_pool='avg'``
            without its fc_norm). A ViT without a class token needs ``'avg_featmap'``.
        pretrained, checkpoint_layout, init_cfg: the ViT checkpoint, as in ``HSTViT``.
    """

    def __init__(self,
                 vit_name: str = 'vit_base_patch16_224',
                 vit_kwargs: Optional[dict] = None,
                 out_type: str = 'cls_token',
                 pretrained: Optional[str] = None,
                 checkpoint_layout: str = 'auto',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=None)
        if out_type not in OUT_TYPES:
            raise ValueError(f'ViTEncoder: out_type {out_type!r} is not one of {OUT_TYPES}')
        if checkpoint_layout not in LAYOUTS:
            raise ValueError(f'ViTEncoder: checkpoint_layout {checkpoint_layout!r} is not one of {LAYOUTS}')
        self.checkpoint, self.checkpoint_prefix = pretrained_checkpoint(pretrained, init_cfg, 'ViTEncoder')
        self.checkpoint_layout = checkpoint_layout
        self.vit = build_timm_vit(vit_name, **(vit_kwargs or {}))
        if out_type == 'cls_token' and getattr(self.vit, 'cls_token', None) is None:
            raise ValueError(f"ViTEncoder: {vit_name} has no class token; use out_type='avg_featmap'")
        self.out_type = out_type
        self.patch_size = vit_patch_size(self.vit)
        self.embed_dims = self.vit.embed_dim

    def init_weights(self) -> None:
        """Load the ViT checkpoint (if any), strictly."""
        if self.checkpoint is not None:
            load_vit_weights(self.vit, self.checkpoint, layout=self.checkpoint_layout,
                             prefix=self.checkpoint_prefix)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        """``(B, 3, H, W)`` -> ``((B, D),)``; sides not divisible by the patch size are padded."""
        check_input(x, self.patch_size, 'ViTEncoder', in_chans=vit_in_chans(self.vit))
        x = pad_to_multiple(x, self.patch_size)
        for _, _, tokens in iter_vit_layers(self.vit, x):
            pass  # only the last layer's sequence is read: no layer output is kept beyond its use
        last = self.vit.norm(tokens)
        if self.out_type == 'cls_token':
            return (last[:, 0],)
        return (last[:, self.vit.num_prefix_tokens:].mean(dim=1),)
