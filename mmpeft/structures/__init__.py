"""Data structures shared by mmpeft's pipelines, models and metrics."""
from .multitask_data_sample import TASKS, MultiTaskDataSample

__all__ = ['MultiTaskDataSample', 'TASKS']
