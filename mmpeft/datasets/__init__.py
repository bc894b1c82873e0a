from .synthetic_seg import SyntheticSegDataset, generate_synthetic_seg

__all__ = ['SyntheticSegDataset', 'generate_synthetic_seg']

# PASCAL-Context multi-task benchmark: dataset, PASCAL-Part reader, synthetic data, transforms.
from .pascal_context_mt import SEMSEG_CLASSES, PascalContextMultiTaskDataset  # noqa: E402
from .pascal_part import PART_CLASSES, PERSON_PART_GROUPS, read_human_parts  # noqa: E402
from .synthetic_pascal_mt import generate_synthetic_pascal_mt  # noqa: E402
from .transforms import *  # noqa: F401,F403,E402
from .vtab1k import VTAB1kDataset  # noqa: E402

__all__ += [
    'PascalContextMultiTaskDataset', 'SEMSEG_CLASSES', 'PART_CLASSES', 'PERSON_PART_GROUPS',
    'read_human_parts', 'generate_synthetic_pascal_mt', 'VTAB1kDataset'
]
