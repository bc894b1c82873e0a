from .delta_checkpoint_hook import DeltaCheckpointHook
from .peft_freeze_hook import PEFTFreezeHook
from .trainable_params_hook import TrainableParamsHook

__all__ = ['DeltaCheckpointHook', 'PEFTFreezeHook', 'TrainableParamsHook']
