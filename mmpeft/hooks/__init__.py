from .delta_checkpoint_hook import DeltaCheckpointHook
from .exact_resume_hook import ExactResumeHook
from .finite_check_hook import FiniteCheckHook
from .peft_freeze_hook import PEFTFreezeHook
from .trainable_params_hook import TrainableParamsHook

__all__ = ['DeltaCheckpointHook', 'ExactResumeHook', 'FiniteCheckHook', 'PEFTFreezeHook', 'TrainableParamsHook']
