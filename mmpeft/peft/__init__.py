from .base import PEFTMethod
from .policy import apply_trainable, keep_in_eval, match_names, restrict_optimizer
from .selection import BitFit, FrozenBackbone, FullFinetune, LNTuning, RelativePositionBias

__all__ = ['PEFTMethod', 'apply_trainable', 'keep_in_eval', 'match_names', 'restrict_optimizer',
           'BitFit', 'FrozenBackbone', 'FullFinetune', 'LNTuning', 'RelativePositionBias']
