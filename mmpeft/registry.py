"""Where mmpeft registers things.

Models, hooks, datasets, transforms and metrics go into mmengine's *root* registries: mmdet, mmseg and
mmpretrain's registries are children of those, and a child falls back to its parent, so
``type='PEFTBackbone'`` builds unprefixed under each toolbox's ``default_scope``. PEFT methods have
a registry of their own (a method is built by the backbone that
applies it, never on its own by a toolbox), independent of the toolboxes' scopes.
"""
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, TRANSFORMS, Registry

# Stand-alone on purpose: a child of MODELS would be swapped for the default scope's registry
# (e.g. mmseg's MODELS) at build time, where the methods are not registered.
PEFT_METHODS = Registry('peft method', scope='mmpeft', locations=['mmpeft.peft'])

__all__ = ['MODELS', 'HOOKS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PEFT_METHODS']
