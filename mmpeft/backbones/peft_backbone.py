"""PEFTBackbone: any registered backbone + a PEFT method, frozen at build time."""
import types
from typing import List, Optional, Sequence, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from ..peft.policy import apply_trainable, frozen_norm_and_dropout_modules, keep_in_eval
from ..registry import MODELS, PEFT_METHODS


def PEFTBackbone(backbone: dict, method: Optional[dict] = None,
                 extra_trainable: Union[str, Sequence[str], None] = None,
                 frozen: Union[str, Sequence[str], None] = None) -> nn.Module:
    """Build ``backbone`` from any registry, apply ``method`` and freeze all it does not declare.

    ``PEFTBackbone`` is a builder, not a wrapper class: it returns the toolbox's own backbone object,
    so state-dict keys stay those of the plain backbone (``backbone.stages.0...``) and checkpoints load
    as users have them. The method object is kept as ``backbone.peft_method``.

    Args:
        backbone: config of the backbone, e.g. ``dict(type='mmseg.SwinTransformer', ...)``; an
            unprefixed type is looked up from the current default scope.
        method: config of a PEFT method (``dict(type='BitFit')``); ``None`` means full fine-tuning.
        extra_trainable: more patterns to train on top of the method's (e.g. ``r'.*norm'``).
        frozen: patterns removed from the trainable set again.

    Returns:
        The backbone, with ``requires_grad`` set so that exactly the declared set trains, and (if the
        method says ``frozen_eval``) frozen norm / dropout modules kept in eval mode in training.
    """
    model = MODELS.build(backbone)
    # under the toolbox's scope, mmengine would look for that scope in the method registry and log
    # a failed search for every build; methods live in mmpeft's own scope
    with DefaultScope.overwrite_default_scope('mmpeft'):
        peft = PEFT_METHODS.build(method if method is not None else dict(type='FullFinetune'))
    peft.inject(model)
    patterns: List[str] = list(peft.trainable_patterns(model))
    if extra_trainable:
        patterns += [extra_trainable] if isinstance(extra_trainable, str) else list(extra_trainable)
    enabled = apply_trainable(model, patterns, frozen, allow_empty=peft.allows_empty)
    model.peft_method = peft
    model.peft_trainable = enabled

    model.peft_policy = dict(trainable=patterns, frozen=frozen, allow_empty=peft.allows_empty)
    if getattr(model, 'init_weights', None) is not None:
        # bound methods (not closures), so a deepcopy of the backbone (EMA, ...) re-binds to the copy
        model.peft_plain_init_weights = model.init_weights
        model.init_weights = types.MethodType(_init_weights_then_method, model)

    if peft.frozen_eval:
        names = frozen_norm_and_dropout_modules(model)
        if names:
            model.peft_eval_hook = keep_in_eval(model, names)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    print_log(f'PEFTBackbone: {type(model).__name__} + {type(peft).__name__}: '
              f'{n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters trainable', logger='current')
    return model


def _init_weights_then_method(self: nn.Module, *args, **kwargs) -> None:
    """The backbone's own init (pretrained loading), then the method's, then the policy again."""
    self.peft_plain_init_weights(*args, **kwargs)
    self.peft_method.init_weights(self)
    # loading pretrained weights must not change the trainable set
    apply_trainable(self, **self.peft_policy)


MODELS.register_module(name='PEFTBackbone', module=PEFTBackbone)
