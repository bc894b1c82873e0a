"""HST's Transformation Bridge (T-Bridge, paper section 3.3, eqs. 1-2), as the authors released it.

For ViT layer ``i`` feeding side-network stage ``j``:

    F_mg^i = [LN_i(W_j F_mr^i), AvgPooling(T(W_j F_p^i))]    Meta-Global branch   (B, N + 1, d_j)
    F_fg^i = T(W_j F_p^i)                                    Fine-Grained branch  (B, H_j * W_j, d_j)

``F_mr^i`` is the layer's Meta-Register output ``(B, N, D)``, ``F_p^i`` its patch tokens
``(B, h, w, D)``, ``W_j`` one linear ``D -> d_j`` shared by every ViT layer feeding stage ``j`` and by
both branches (Linear Weight Sharing), and ``T`` bilinear resizing to the stage's ``H_j x W_j``,
applied *after* the projection (resizing ``d_j`` rather than ``D`` channels; for the upsampled
stride-4 / stride-8 stages this is the cheap order). The average of the projected, resized patch
tokens is the "GlobalT" token (the released model averages after resizing; at integer size ratios that
equals the average before).

``LN_i`` (``register_norm=True``, the released model's ``m_proj_norm{i+1}``) is a LayerNorm of width
``d_j`` per ViT layer on the projected Meta-Register tokens only, not on GlobalT; eq. 1 of the paper
has none (``register_norm=False``, 2 d_j parameters less per layer: 1,296 for ViT-B with
``[32, 48, 64, 72]``). Its eps is not stated by the released facts we have; 1e-6, the Side blocks'.

Ablation switches of Table 7 / 8 are options: ``use_global_token`` (GlobalT), ``use_fine_grained``
(FG injection), ``share_weights`` (one linear per stage, or one per ViT layer).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .side_network import BLOCK_NORM_EPS


class TransformationBridge(nn.Module):
    """Projects ViT layer outputs into the side network's stages.

    Args:
        in_dims: ViT width ``D``.
        embed_dims: side-network widths ``d_j`` per stage.
        depths: ViT layers (= side blocks) per stage; layer ``i`` feeds the stage whose range holds it.
        share_weights: one linear ``W_j`` per stage (the paper's choice) instead of one per layer.
        use_global_token: put GlobalT (mean of projected patch tokens) into the Meta-Global branch.
        use_fine_grained: produce the Fine-Grained branch.
        register_norm: a LayerNorm per layer on the projected Meta-Register tokens (released model);
            ``False`` is eq. 1 as printed.
    """

    def __init__(self, in_dims: int, embed_dims: Sequence[int], depths: Sequence[int],
                 share_weights: bool = True, use_global_token: bool = True,
                 use_fine_grained: bool = True, register_norm: bool = True):
        super().__init__()
        if len(embed_dims) != len(depths):
            raise ValueError(f'embed_dims {list(embed_dims)} and depths {list(depths)} differ in length')
        self.depths = list(depths)
        self.share_weights = share_weights
        self.use_global_token = use_global_token
        self.use_fine_grained = use_fine_grained
        # stage of every ViT layer, in order
        self.layer_stage: List[int] = [j for j, n in enumerate(depths) for _ in range(n)]
        if share_weights:
            self.linears = nn.ModuleList(nn.Linear(in_dims, d) for d in embed_dims)
        else:
            self.linears = nn.ModuleList(nn.Linear(in_dims, embed_dims[j]) for j in self.layer_stage)
        self.register_norms = nn.ModuleList(
            nn.LayerNorm(embed_dims[j], eps=BLOCK_NORM_EPS) for j in self.layer_stage) if register_norm else None

    def linear_of(self, layer: int) -> nn.Linear:
        """``W_j`` of ViT layer ``layer``."""
        return self.linears[self.layer_stage[layer]] if self.share_weights else self.linears[layer]

    def forward(self, layer: int, patch: torch.Tensor, register: Optional[torch.Tensor],
                size: Tuple[int, int]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Both branches for ViT layer ``layer``.

        Args:
            layer: index ``i`` of the ViT layer.
            patch: ``F_p^i``, ``(B, h, w, D)``.
            register: ``F_mr^i``, ``(B, N, D)``, or ``None`` without Meta-Register.
            size: ``(H_j, W_j)`` of the stage's token map.

        Returns:
            ``F_mg^i`` ``(B, N + 1, d_j)`` (or ``(B, N, d_j)`` / ``(B, 1, d_j)`` with one part
            switched off, ``None`` with both off) and ``F_fg^i`` ``(B, H_j * W_j, d_j)`` (or ``None``).
        """
        linear = self.linear_of(layer)
        reg = self._register(layer, linear(register)) if register is not None else None
        return self._branches(linear(patch), reg, size)

    def forward_sequence(self, layer: int, seq: torch.Tensor, num_prefix: int, grid: Tuple[int, int],
                         num_register: int, size: Tuple[int, int]
                         ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """:meth:`forward` from ViT layer ``layer``'s whole output sequence.

        ``seq`` is ``(B, num_prefix + h * w + num_register, D)`` (timm's prefix tokens, the patch
        tokens of the ``grid`` ``(h, w)``, the Meta-Register outputs last). It is projected by ``W_j``
        in one product (the few prefix rows cost nothing), and the patch / register parts are taken as
        views of the result -- no copy of the ``D``-wide patch tokens.
        """
        b, n, _ = seq.shape
        h, w = grid
        proj = self.linear_of(layer)(seq)                                    # (B, n, d_j)
        patch = proj[:, num_prefix:num_prefix + h * w].unflatten(1, (h, w))  # (B, h, w, d_j)
        reg = self._register(layer, proj[:, n - num_register:]) if num_register else None
        return self._branches(patch, reg, size)

    def _register(self, layer: int, reg: torch.Tensor) -> torch.Tensor:
        return reg if self.register_norms is None else self.register_norms[layer](reg)

    def _branches(self, proj: torch.Tensor, reg: Optional[torch.Tensor], size: Tuple[int, int]
                  ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(F_mg, F_fg)`` from the projected patch tokens ``(B, h, w, d_j)`` and register
        outputs ``(B, N, d_j)`` (or ``None``)."""
        resized = None
        if self.use_fine_grained or self.use_global_token:
            resized = proj.permute(0, 3, 1, 2)  # (B, d_j, h, w) view, channels-last strides
            if tuple(resized.shape[-2:]) != tuple(size):
                resized = F.interpolate(resized, size=size, mode='bilinear', align_corners=False)
            resized = resized.flatten(2).transpose(1, 2)                     # (B, H_j W_j, d_j)
        mg_parts = [] if reg is None else [reg]
        if self.use_global_token:
            mg_parts.append(resized.mean(dim=1, keepdim=True))
        mg = torch.cat(mg_parts, dim=1) if mg_parts else None
        return mg, (resized if self.use_fine_grained else None)
