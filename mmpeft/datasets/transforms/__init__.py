"""Multi-task data transforms (registered in mmengine's root TRANSFORMS)."""
from .formatting import PackMultiTaskInputs
from .loading import LoadMultiTaskAnnotations, binarize_saliency, decode_normals
from .multitask_transforms import (
                                   MultiTaskRandomFlip,
                                   MultiTaskRandomRotate,
                                   MultiTaskRandomScale,
                                   MultiTaskResize,
                                   rotation_matrix,
                                   warp_affine_results,
)

__all__ = [
    'LoadMultiTaskAnnotations', 'MultiTaskRandomFlip', 'MultiTaskRandomScale',
    'MultiTaskRandomRotate', 'MultiTaskResize', 'PackMultiTaskInputs', 'decode_normals',
    'binarize_saliency', 'rotation_matrix', 'warp_affine_results'
]
