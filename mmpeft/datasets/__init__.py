from .synthetic_seg import SyntheticSegDataset, generate_synthetic_seg

__all__ = ['SyntheticSegDataset', 'generate_synthetic_seg']

# PASCAL-Context multi-task benchmark: dataset, PASCAL-Part reader, synthetic data, transforms.
# FGVC from the VPT release's JSON splits (full CIFAR-100: mmpretrain's CIFAR100)
from .fgvc import (  # noqa: E402
                   CUB200Dataset,
                   FGVCJsonDataset,
                   NABirdsDataset,
                   OxfordFlowersDataset,
                   StanfordCarsDataset,
                   StanfordDogsDataset,
)
from .pascal_context_mt import SEMSEG_CLASSES, PascalContextMultiTaskDataset  # noqa: E402
from .pascal_part import PART_CLASSES, PERSON_PART_GROUPS, read_human_parts  # noqa: E402
from .synthetic_pascal_mt import generate_synthetic_pascal_mt  # noqa: E402
from .transforms import *  # noqa: F401,F403,E402
from .vtab1k import VTAB1K_GROUPS, VTAB1K_NUM_CLASSES, VTAB1K_TASKS, VTAB1kDataset  # noqa: E402

__all__ += [
    'PascalContextMultiTaskDataset', 'SEMSEG_CLASSES', 'PART_CLASSES', 'PERSON_PART_GROUPS',
    'read_human_parts', 'generate_synthetic_pascal_mt', 'VTAB1kDataset', 'VTAB1K_TASKS', 'VTAB1K_GROUPS',
    'VTAB1K_NUM_CLASSES', 'FGVCJsonDataset', 'CUB200Dataset', 'NABirdsDataset', 'OxfordFlowersDataset',
    'StanfordDogsDataset', 'StanfordCarsDataset'
]
