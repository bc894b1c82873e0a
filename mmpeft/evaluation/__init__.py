"""Evaluation metrics (registered in mmengine's root METRICS)."""
from .multitask_metric import SWIN_T_SINGLE_TASK, MultiTaskDenseMetric

__all__ = ['MultiTaskDenseMetric', 'SWIN_T_SINGLE_TASK']
