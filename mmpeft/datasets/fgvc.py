"""The five FGVC datasets as the VPT release lays them out: JSON split files of ``image path -> label``.

Layout (the VPT release the HST authors point to; one folder per dataset)::

    <data_root>/train.json   {"<image path relative to the image folder>": <label>, ...}
    <data_root>/val.json     (VPT's 10 % of the official training set, for hyper-parameter search)
    <data_root>/test.json
    <data_root>/<image folder>/...   images/ (CUB-200-2011, NABirds), Images/ (Stanford Dogs),
                                     the data root itself (Oxford Flowers, Stanford Cars)

Labels are mapped to ``0 .. num_classes - 1`` in the sorted order of the distinct labels of
``train.json`` (as VPT's reader does per split; taking them from ``train.json`` keeps every split on
the same mapping). NABirds' labels, for one, are not contiguous in the release.

Splits: ``train``, ``val``, ``test`` and ``trainval`` (``train.json`` and ``val.json`` together: the
official training set, which the HST authors' own data loaders train on).

Full CIFAR-100 (Table 3's general benchmark) needs no class here: mmpretrain's ``CIFAR100`` reads the
python pickle release (``<data_root>/cifar-100-python/{train,test,meta}``).
"""
import json
import os.path as osp
from typing import Dict, List, Optional

from mmengine.fileio import get_local_path
from mmpretrain.datasets import BaseDataset

from ..registry import DATASETS

SPLITS = ('train', 'val', 'test', 'trainval')


class FGVCJsonDataset(BaseDataset):
    """One FGVC dataset read from VPT's JSON split files (see the module docstring for the layout).

    Args:
        data_root: the dataset folder holding ``train.json`` / ``val.json`` / ``test.json``.
        split: ``'train'``, ``'val'``, ``'test'`` or ``'trainval'`` (train + val).
        num_classes: number of classes (default: the dataset's). ``train.json`` must hold exactly this
            many distinct labels, and the split read no label outside them; either is an error naming
            the file.
        image_dir: folder of the images relative to ``data_root`` (default: the dataset's, as in VPT).
        **kwargs: ``pipeline``, ``test_mode`` ... as for mmpretrain's ``BaseDataset``.
    """

    NUM_CLASSES: int = 0
    IMAGE_DIR: str = ''

    def __init__(self, data_root: str, split: str = 'trainval', num_classes: Optional[int] = None,
                 image_dir: Optional[str] = None, **kwargs):
        name = type(self).__name__
        if split not in SPLITS:
            raise ValueError(f'{name}: split {split!r} is not one of {SPLITS}')
        self.split = split
        self.num_classes = int(num_classes if num_classes is not None else self.NUM_CLASSES)
        if self.num_classes < 1:
            raise ValueError(f'{name}: num_classes={num_classes} must be positive')
        self.image_dir = self.IMAGE_DIR if image_dir is None else image_dir
        kwargs.setdefault('classes', [str(i) for i in range(self.num_classes)])
        # no single annotation file: load_data_list reads the split's JSON file(s)
        super().__init__(ann_file='', data_root=data_root, **kwargs)

    def _read_split(self, split: str) -> Dict[str, int]:
        path = osp.join(self.data_root, f'{split}.json')
        name = type(self).__name__
        if not osp.isfile(path):
            raise FileNotFoundError(f'{name}: split file {path} not found (expected the VPT release layout '
                                    f'<data_root>/{{train,val,test}}.json; data_root={self.data_root!r})')
        with get_local_path(path) as local, open(local) as f:
            try:
                anno = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}: not valid JSON ({e})') from e
        if not isinstance(anno, dict) or not anno:
            # an empty list would fail in mmengine's serialisation or hang an infinite sampler
            raise ValueError(f'{path}: expected a non-empty JSON object {{"relative/image.jpg": label, ...}}, '
                             f'got {json.dumps(anno)[:80]}')
        for img, label in anno.items():
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(f'{path}: label of {img!r} is {label!r}; labels must be integers')
        return anno

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        train = self._read_split('train')
        class_ids = sorted(set(train.values()))
        if len(class_ids) != self.num_classes:
            raise ValueError(f'{name}: {osp.join(self.data_root, "train.json")} holds {len(class_ids)} distinct '
                             f'labels but the dataset has num_classes={self.num_classes}; set num_classes (and the '
                             f"model's head / data_preprocessor num_classes) to {len(class_ids)} if this is "
                             'intended, or re-download the split files')
        to_index = {c: i for i, c in enumerate(class_ids)}
        img_root = osp.join(self.data_root, self.image_dir)
        if not osp.isdir(img_root):
            raise FileNotFoundError(f'{name}: image folder {img_root} not found (image paths in the JSON files '
                                    f'are relative to <data_root>/{self.image_dir or ""}; pass image_dir=... '
                                    'if your copy differs)')
        splits = ['train', 'val'] if self.split == 'trainval' else [self.split]
        data_list = []
        for split in splits:
            anno = train if split == 'train' else self._read_split(split)
            for img, label in anno.items():
                if label not in to_index:
                    raise ValueError(f'{osp.join(self.data_root, split + ".json")}: label {label} of {img!r} '
                                     'is not among the labels of train.json')
                data_list.append(dict(img_path=osp.join(img_root, img), gt_label=to_index[label]))
        return data_list


@DATASETS.register_module()
class CUB200Dataset(FGVCJsonDataset):
    """CUB-200-2011 (200 classes), images under ``<data_root>/images``."""
    NUM_CLASSES = 200
    IMAGE_DIR = 'images'


@DATASETS.register_module()
class NABirdsDataset(FGVCJsonDataset):
    """NABirds (555 classes; the release's labels are not contiguous), images under ``<data_root>/images``."""
    NUM_CLASSES = 555
    IMAGE_DIR = 'images'


@DATASETS.register_module()
class OxfordFlowersDataset(FGVCJsonDataset):
    """Oxford Flowers-102 (102 classes), image paths relative to ``<data_root>``."""
    NUM_CLASSES = 102
    IMAGE_DIR = ''


@DATASETS.register_module()
class StanfordDogsDataset(FGVCJsonDataset):
    """Stanford Dogs (120 classes), images under ``<data_root>/Images``."""
    NUM_CLASSES = 120
    IMAGE_DIR = 'Images'


@DATASETS.register_module()
class StanfordCarsDataset(FGVCJsonDataset):
    """Stanford Cars (196 classes), image paths relative to ``<data_root>``."""
    NUM_CLASSES = 196
    IMAGE_DIR = ''
