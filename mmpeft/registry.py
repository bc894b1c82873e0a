"""Where mmpeft registers things.

Models, hooks, datasets, transforms and metrics go into mmengine's *root* registries: mmdet, mmseg and
mmpretrain's registries are children of those, and a child falls back to its parent, so
``type='PEFTBackbone'`` builds unprefixed under each toolbox's ``default_scope``. PEFT methods have
a registry of their own, a child of the root ``MODELS`` (a method is built by the backbone that
applies it, never on its own by a toolbox).
"""
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS, Registry

PEFT_METHODS = Registry('peft method', parent=MODELS, scope='mmpeft', locations=['mmpeft.peft'])

__all__ = ['MODELS', 'HOOKS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'PEFT_METHODS']
