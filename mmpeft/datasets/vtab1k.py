"""VTAB-1k as users download it: one folder per task with image lists.

Layout (the common VTAB-1k release used by VPT / NOAH / SSF / HST)::

    <data_root>/<task>/train800val200.txt   # 1000 training images: "images/.../x.jpg 3" per line
    <data_root>/<task>/train800.txt         # the 800 / 200 split used for hyper-parameter search
    <data_root>/<task>/val200.txt
    <data_root>/<task>/test.txt
    <data_root>/<task>/images/...

Each list line is ``<path relative to the task folder> <integer label>``; the path may contain spaces
(the label is the last field). Following the paper (appendix B.2.1), models train on
``train800val200`` and are evaluated on ``test``.
"""
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.fileio import get_local_path
from mmpretrain.datasets import BaseDataset

from ..registry import DATASETS

# the 19 VTAB-1k tasks by their usual folder names, in the column order of the papers' tables (HST
# Table 2, VPT, NOAH), by group; the reported means are per group, then over the three groups
VTAB1K_GROUPS: Dict[str, Tuple[str, ...]] = {
    'natural': ('cifar', 'caltech101', 'dtd', 'oxford_flowers102', 'oxford_iiit_pet', 'svhn', 'sun397'),
    'specialized': ('patch_camelyon', 'eurosat', 'resisc45', 'diabetic_retinopathy'),
    'structured': ('clevr_count', 'clevr_dist', 'dmlab', 'kitti', 'dsprites_loc', 'dsprites_ori',
                   'smallnorb_azi', 'smallnorb_ele'),
}
VTAB1K_TASKS: Tuple[str, ...] = sum(VTAB1K_GROUPS.values(), ())

# number of classes of each task
VTAB1K_NUM_CLASSES: Dict[str, int] = {
    'cifar': 100, 'caltech101': 102, 'dtd': 47, 'oxford_flowers102': 102, 'oxford_iiit_pet': 37,
    'svhn': 10, 'sun397': 397,
    'patch_camelyon': 2, 'eurosat': 10, 'resisc45': 45, 'diabetic_retinopathy': 5,
    'clevr_count': 8, 'clevr_dist': 6, 'dmlab': 6, 'kitti': 4, 'dsprites_loc': 16,
    'dsprites_ori': 16, 'smallnorb_azi': 18, 'smallnorb_ele': 9,
}

SPLIT_FILES = {
    'train': 'train800val200.txt', 'train800val200': 'train800val200.txt',
    'train800': 'train800.txt', 'val200': 'val200.txt', 'val': 'val200.txt', 'test': 'test.txt',
}


@DATASETS.register_module()
class VTAB1kDataset(BaseDataset):
    """One VTAB-1k task.

    Args:
        data_root: the folder holding the task folders.
        task: task folder name, e.g. ``'cifar'``, ``'dsprites_loc'``.
        split: ``'train'`` (= ``train800val200``), ``'train800'``, ``'val200'`` or ``'test'``.
        num_classes: number of classes (default: the task's, for the 19 known tasks). Labels outside
            ``0 .. num_classes - 1`` are an error naming the line; a list without samples is an
            error naming the file.
        **kwargs: ``pipeline``, ``test_mode`` ... as for mmpretrain's ``BaseDataset``.
    """

    def __init__(self, data_root: str, task: str, split: str = 'train',
                 num_classes: Optional[int] = None, **kwargs):
        if split not in SPLIT_FILES:
            raise ValueError(f'VTAB1kDataset: split {split!r} is not one of {sorted(SPLIT_FILES)}')
        if num_classes is None:
            if task not in VTAB1K_NUM_CLASSES:
                raise ValueError(f'VTAB1kDataset: unknown task {task!r}; give num_classes or use one '
                                 f'of {sorted(VTAB1K_NUM_CLASSES)}')
            num_classes = VTAB1K_NUM_CLASSES[task]
        self.task = task
        self.split = split
        self.num_classes = int(num_classes)
        kwargs.setdefault('classes', [str(i) for i in range(self.num_classes)])
        super().__init__(ann_file=osp.join(task, SPLIT_FILES[split]), data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        task_dir = osp.dirname(self.ann_file)
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'VTAB1kDataset: list file {self.ann_file} not found (expected '
                                    f'<data_root>/<task>/{SPLIT_FILES[self.split]})')
        data_list = []
        with get_local_path(self.ann_file) as path, open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.rsplit(maxsplit=1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    raise ValueError(f'{self.ann_file}:{n}: expected "<relative/path.jpg> <label>", '
                                     f'got {line!r}')
                label = int(parts[1])
                if not 0 <= label < self.num_classes:
                    raise ValueError(f'{self.ann_file}:{n}: label {label} outside 0..'
                                     f'{self.num_classes - 1} of task {self.task!r}')
                data_list.append(dict(img_path=osp.join(task_dir, parts[0]), gt_label=label))
        if not data_list:
            # an empty list would fail in mmengine's serialisation or hang an infinite sampler
            raise ValueError(f'VTAB1kDataset: list file (ann_file) {osp.abspath(self.ann_file)} '
                             f'lists no samples (it is empty); it needs one "<relative/path.jpg> '
                             f'<label>" line per image: re-extract task {self.task!r}')
        return data_list
