"""AllMLPHead: SegFormer's All-MLP decoder with a configurable number of outputs, one per task."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from ..registry import MODELS


@MODELS.register_module()
class AllMLPHead(BaseModule):
    """SegFormer's All-MLP decoder (Xie et al., 2021) as the Polyhistor paper uses it per task (Sec. 5.1).

    Each of the ``L`` multi-scale features is embedded to ``channels`` by a per-pixel linear layer (a 1x1
    convolution + norm + activation, as mmseg's ``SegformerHead``), upsampled to the first feature's
    resolution, concatenated, fused by another 1x1 layer and classified by a 1x1 convolution.

    Parameters: ``channels * (sum(in_channels) + L * channels)`` + norms + ``(channels + 1) * out_channels``;
    for Swin-T widths and ``channels=256`` about 0.63M per task.

    Args:
        in_channels: widths of the backbone features, finest first.
        out_channels: task outputs (21 semseg classes, 7 part classes, 1 saliency logit, 3 normal components).
        channels: embedding size (256 in the paper's setting).
        norm_cfg, act_cfg: of the embedding and fusion layers.
        dropout_ratio: dropout before the classifier (mmseg's decode-head default).
        align_corners: of the bilinear upsampling.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, channels: int = 256,
                 norm_cfg: Optional[dict] = dict(type='BN'), act_cfg: Optional[dict] = dict(type='ReLU'),
                 dropout_ratio: float = 0.1, align_corners: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if out_channels < 1:
            raise ValueError(f'AllMLPHead: out_channels must be >= 1, got {out_channels}')
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.align_corners = align_corners
        self.convs = nn.ModuleList(
            ConvModule(c, channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg) for c in self.in_channels)
        self.fusion_conv = ConvModule(channels * len(self.in_channels), channels, 1, norm_cfg=norm_cfg,
                                      act_cfg=act_cfg)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, out_channels, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``L`` features ``(B, C_i, H_i, W_i)`` -> ``(B, out_channels, H_0, W_0)`` (1/4 of the input for Swin)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f'AllMLPHead: expected {len(self.in_channels)} features, got {len(feats)}')
        size = feats[0].shape[2:]
        outs = [F.interpolate(conv(f), size=size, mode='bilinear', align_corners=self.align_corners)
                if f.shape[2:] != size else conv(f) for conv, f in zip(self.convs, feats)]
        out = self.fusion_conv(torch.cat(outs, dim=1))
        return self.conv_seg(self.dropout(out))
