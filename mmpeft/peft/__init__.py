from .base import PEFTMethod
from .policy import apply_trainable, keep_in_eval, match_names, restrict_optimizer
from .selection import BitFit, FrozenBackbone, FullFinetune, LNTuning, RelativePositionBias

__all__ = ['PEFTMethod', 'apply_trainable', 'keep_in_eval', 'match_names', 'restrict_optimizer',
           'BitFit', 'FrozenBackbone', 'FullFinetune', 'LNTuning', 'RelativePositionBias']
from .adapter import Adapter, AdaptFormer, LowRankAdapter, SharedAdapter
from .combined import NOAH, Combined  # noqa: E402
from .lora import LoRA
from .phm import Compacter, CompacterPlusPlus, PHMLayer
from .prompt import VPT, VPTDeep, VPTShallow
from .ssf import SSF
from .task_conditioned import Hyperformer, Polyhistor, PolyhistorLite, TaskAdapters  # noqa: E402
from .taskwise import TaskSwitch, TaskWiseMethod, forward_for_task

__all__ += ['TaskSwitch', 'TaskWiseMethod', 'forward_for_task', 'LoRA', 'Adapter', 'LowRankAdapter',
            'SharedAdapter', 'AdaptFormer', 'PHMLayer', 'Compacter', 'CompacterPlusPlus', 'VPT',
            'VPTDeep', 'VPTShallow', 'SSF']
__all__ += ['Combined', 'NOAH', 'Hyperformer', 'Polyhistor', 'PolyhistorLite', 'TaskAdapters']
