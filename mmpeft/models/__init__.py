"""Multi-task dense prediction: model, data preprocessor, All-MLP decoder and per-task losses."""
from .all_mlp_head import AllMLPHead
from .data_preprocessor import MultiTaskDataPreProcessor
from .dense_losses import BalancedBCELoss, DenseCrossEntropyLoss, NormalsL1Loss
from .multitask_dense_model import LOSS_WEIGHT_PRESETS, NUM_OUTPUTS, MultiTaskDenseModel

__all__ = ['AllMLPHead', 'MultiTaskDataPreProcessor', 'BalancedBCELoss', 'DenseCrossEntropyLoss',
           'NormalsL1Loss', 'MultiTaskDenseModel', 'LOSS_WEIGHT_PRESETS', 'NUM_OUTPUTS']
