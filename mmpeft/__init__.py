"""mmpeft: parameter-efficient fine-tuning for the OpenMMLab toolboxes.

Importing the package applies the pinned-stack fixes (:mod:`mmpeft.utils.compat`) and registers every
mmpeft class in mmengine's root registries, so `type='PEFTBackbone'` etc. build unprefixed under
``default_scope`` mmdet, mmseg and mmpretrain (``custom_imports=dict(imports=['mmpeft'])``).
"""
from .version import __version__, version_info
from .utils import compat  # noqa: F401  (applies fixes on import)
from . import peft, backbones, hooks, datasets  # noqa: F401,E402  (register classes)

__all__ = ['__version__', 'version_info']
