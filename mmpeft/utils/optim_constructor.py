"""An optimizer-wrapper constructor that hands the optimizer exactly the trainable parameters.

mmengine's ``DefaultOptimWrapperConstructor`` gives the optimizer every parameter of the model unless
``paramwise_cfg`` is set, and with it logs one warning per frozen parameter. For a model frozen at
build time (every mmpeft backbone) that is an optimizer holding 100M frozen tensors, or thousands of
warnings. ``import mmpeft`` changes the default constructor this way for every config (the
``optimizer_drops_frozen`` fix of :mod:`mmpeft.utils.compat`); this registered constructor gives the
same behaviour to a config that names it, without the global change::

    optim_wrapper = dict(constructor='TrainableOnlyOptimWrapperConstructor', optimizer=dict(type='AdamW', ...))

Parameters frozen when the optimizer is built are left out (one summary line); ``paramwise_cfg``
works as with the default constructor.
"""
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS
from . import compat


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOnlyOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`~mmengine.optim.DefaultOptimWrapperConstructor` whose optimizer holds only the parameters
    with ``requires_grad=True`` at construction time."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if 'optimizer_drops_frozen' in compat.applied():
            return super().__call__(model)  # the default constructor already does it
        return compat.build_trainable_only(DefaultOptimWrapperConstructor.__call__, self, model)
