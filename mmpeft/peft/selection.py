"""Parameter-selection methods: train a subset of the existing weights, inject nothing.

- ``FullFinetune``: every parameter (the upper-bound row of both papers).
- ``FrozenBackbone``: none (the "decoders only" row of Polyhistor Table 1; "linear probing" in HST).
- ``BitFit``: every bias (Zaken et al.); on Swin this includes the biases of patch embedding and patch
  merging (their norms' biases too), as the Polyhistor appendix counts them.
- ``LNTuning``: the affine parameters of every LayerNorm (HST's LN tuning).
- ``RelativePositionBias``: the relative position bias tables of windowed attention (Swin).
"""
from typing import List

import torch.nn as nn

from ..registry import PEFT_METHODS
from .base import PEFTMethod


@PEFT_METHODS.register_module()
class FullFinetune(PEFTMethod):
    """Train every parameter of the backbone."""

    def __init__(self, frozen_eval: bool = False):
        super().__init__(frozen_eval=frozen_eval)

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return ['.*']


@PEFT_METHODS.register_module()
class FrozenBackbone(PEFTMethod):
    """Train nothing in the backbone (decoders only / linear probing)."""

    allows_empty = True

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return []


@PEFT_METHODS.register_module()
class BitFit(PEFTMethod):
    """Train all bias terms: every parameter whose name ends in ``bias``."""

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return [r'(.*\.)?bias$']


@PEFT_METHODS.register_module()
class LNTuning(PEFTMethod):
    """Train the weight and bias of every ``nn.LayerNorm`` (by type, whatever the module is named)."""

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        names = [n for n, m in backbone.named_modules() if isinstance(m, nn.LayerNorm) and n]
        return [rf'{n.replace(".", r"[.]")}\.(weight|bias)$' for n in names]


@PEFT_METHODS.register_module()
class RelativePositionBias(PEFTMethod):
    """Train the relative position bias tables (``relative_position_bias_table`` in mmcls/mmseg Swin)."""

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return [r'(.*\.)?relative_position_bias_table$']
