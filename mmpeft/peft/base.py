"""What a PEFT method is.

A method does two things to a backbone, both at build time:

1. ``inject(peft)``: add its modules (adapters, prompts, low-rank branches ...) and hooks through the
   backbone's :class:`~mmpeft.peft.attachment.PEFTAttachment` ``peft`` (``peft.add``, ``peft.hook``,
   ``peft.window_attention``), which owns them and can remove them. Pure parameter-selection methods
   (BitFit, LayerNorm tuning) inject nothing.
2. ``trainable_patterns(backbone)``: declare which parameters train, as regular expressions matched
   at the start of the backbone's parameter names.

:func:`mmpeft.backbones.build_peft_backbone` (config type ``PEFTBackbone``) then freezes everything
else (``peft.freeze``), so a config line ``method=dict(type='BitFit')`` switches methods. Mergeable
methods (LoRA, SSF) register each hook with the injected module that folds it into the frozen weights
(``merge_into`` / ``unmerge_from``): ``backbone.peft.merge()`` / ``unmerge()``.
"""
from typing import List

import torch.nn as nn


class PEFTMethod:
    """Base class of every PEFT method.

    Args:
        frozen_eval: keep frozen norm and dropout / drop-path modules in eval mode during training,
            so the frozen encoder computes exactly what it was pretrained to compute (BatchNorm
            statistics are not updated, no dropout). The papers do not say; True is our default.
    """

    #: whether an empty trainable set inside the backbone is expected (decoders-only / linear probe)
    allows_empty: bool = False
    #: whether the method folds into the frozen weights (informative; ``backbone.peft.mergeable`` decides
    #: from the hooks the method registered with ``merge_with``)
    mergeable: bool = False
    #: why the backbone cannot checkpoint its blocks (``with_cp``) with this method; empty: it can
    _not_checkpointable: str = ''

    def __init__(self, frozen_eval: bool = True):
        self.frozen_eval = frozen_eval

    def inject(self, peft) -> None:
        """Add the method's modules and hooks to ``peft.model`` through ``peft`` (default: nothing)."""

    def init_weights(self, backbone: nn.Module) -> None:
        """Re-initialise injected modules after the backbone's own ``init_weights`` (default: nothing).

        Backbones re-initialise every ``nn.Linear`` they contain when no pretrained checkpoint is
        given, which would undo e.g. a zero-initialised up-projection; this runs after that.
        """

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        """Regular expressions of the trainable parameter names, relative to ``backbone``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
