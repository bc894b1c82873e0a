"""mmpeft: parameter-efficient fine-tuning for the OpenMMLab toolboxes.

Importing the package applies the pinned-stack fixes (:mod:`mmpeft.utils.compat`) and registers every
mmpeft class in mmengine's root registries, so `type='PEFTBackbone'` etc. build unprefixed under
``default_scope`` mmdet, mmseg and mmpretrain (``custom_imports=dict(imports=['mmpeft'])``).
"""
from .version import __version__, version_info
from .utils import compat  # noqa: F401  (applies fixes on import)
from .utils import mim  # noqa: F401  (mmpeft:: config bases)
from .utils import optim_constructor  # noqa: F401  (registers TrainableOnlyOptimWrapperConstructor)
from .utils import adapter_io  # noqa: F401  (registers the PEFTAdapter weight initializer)
from . import peft, backbones, hooks, datasets, evaluation, structures  # noqa: F401,E402  (register classes)
from . import models  # noqa: F401,E402  (multi-task dense model, heads, losses)

__all__ = ['__version__', 'version_info']
