"""PASCAL-Context multi-task dataset (semantic segmentation, human parts, saliency, normals).

Expected on-disk layout (the standard ``PASCAL_MT`` release; ``data_root`` points at it)::

    PASCAL_MT/
      JPEGImages/<id>.jpg
      ImageSets/Context/{train,val}.txt   one image id per line (4998 / 5105 ids)
      ImageSets/Parts/{train,val}.txt     JSON: {id: [VOC class index of each annotated object]}
      semseg/VOC12/<id>.png               21-class labels, used when present ...
      semseg/pascal-context/<id>.png      ... else these (0 = background, 255 = ignore)
      human_parts/<id>.mat                PASCAL-Part annotation (see mmpeft.datasets.pascal_part)
      sal_distill/<id>.png                grey saliency, binarised at 0.5
      normals_distill/<id>.png            RGB normals, n = 2 v / 255 - 1, (0, 0, 0) = invalid

Person presence comes from ``ImageSets/Parts/<split>.txt``: an image has a person when its list
contains 15 (VOC's person). Its values may also be plain booleans; an id missing from the file is
an error. Images without a person need no ``.mat`` and get all-ignore part labels.

Example pipelines (mmseg's ``PhotoMetricDistortion`` is photometric only, so it is reused)::

    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadMultiTaskAnnotations'),
        dict(type='MultiTaskRandomFlip', prob=0.5),
        dict(type='MultiTaskRandomScale', scale_range=(0.75, 1.25)),
        dict(type='MultiTaskRandomRotate', degree=20),
        dict(type='MultiTaskResize', scale=(512, 512)),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackMultiTaskInputs'),
    ]
    test_pipeline = [  # annotations after the resize: ground truth stays at the original size
        dict(type='LoadImageFromFile'),
        dict(type='MultiTaskResize', scale=(512, 512)),
        dict(type='LoadMultiTaskAnnotations'),
        dict(type='PackMultiTaskInputs'),
    ]
"""
import json
import os.path as osp
from typing import Callable, List, Optional, Sequence, Union

from mmengine import fileio
from mmengine.dataset import BaseDataset

from mmpeft.registry import DATASETS
from mmpeft.structures.multitask_data_sample import TASKS

from .pascal_part import PART_CLASSES, PERSON_CLASS_IND

#: The 21 semantic classes (VOC's 20 + background).
SEMSEG_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
                  'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
                  'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


def voc_palette(num: int = 256) -> List[List[int]]:
    """The VOC colour map: the bits of the class index spread over R, G, B from the high bit."""
    palette = []
    for i in range(num):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append([r, g, b])
    return palette


def _has_person(value: Union[bool, Sequence[int]]) -> bool:
    if isinstance(value, bool):
        return value
    return PERSON_CLASS_IND in [int(v) for v in value]


@DATASETS.register_module()
class PascalContextMultiTaskDataset(BaseDataset):
    """PASCAL-Context multi-task benchmark (Polyhistor / MTI-Net / ATRC setting).

    Each data info holds ``img_path``, ``img_id``, ``tasks`` and, per selected task, the paths
    :class:`~mmpeft.datasets.transforms.LoadMultiTaskAnnotations` reads: ``seg_map_path``
    (semseg), ``parts_path`` and ``has_person`` (parts), ``sal_path`` (sal), ``normals_path``
    (normals).

    Args:
        data_root: the ``PASCAL_MT`` folder.
        split: ``'train'`` or ``'val'``; picks the default ``ann_file`` and ``parts_list_file``.
        tasks: tasks whose annotations are listed (subset of ``('semseg', 'parts', 'sal',
            'normals')``, in any order; kept in canonical order).
        ann_file: image-id list, default ``ImageSets/Context/<split>.txt`` (relative to
            ``data_root``).
        parts_list_file: person-presence JSON, default ``ImageSets/Parts/<split>.txt``.
        data_prefix: folders of each file kind, relative to ``data_root`` (keys ``img_path``,
            ``semseg_voc``, ``semseg_context``, ``parts``, ``sal``, ``normals``).
        check_files: verify at initialisation that every listed file exists, so a broken copy of
            the dataset fails at once, naming the files, rather than mid-training. (The semseg
            files are looked up in any case: that is how VOC12 or pascal-context is chosen.)
        img_suffix, seg_suffix: file extensions.
        generate: arguments of :func:`generate_synthetic_pascal_mt` (``num_train``, ``num_val``,
            ``size``, ``seed``) to write a synthetic copy at ``data_root`` first when it is absent;
            None (default) reads ``data_root`` as it is. Only the demo configs set it.
        **kwargs: the rest of :class:`mmengine.dataset.BaseDataset`'s arguments (``pipeline``,
            ``test_mode``, ``indices``, ``lazy_init``, ``serialize_data``, ``max_refetch``,
            ``metainfo``).

    Raises:
        FileNotFoundError: naming the id list, the person list or the missing annotation files.
        ValueError: unknown tasks, an id list with no ids, or ids of the id list missing from the
            person list.
    """

    METAINFO = dict(classes=SEMSEG_CLASSES, palette=voc_palette(len(SEMSEG_CLASSES)),
                    part_classes=PART_CLASSES, tasks=TASKS)

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 tasks: Sequence[str] = TASKS,
                 ann_file: str = '',
                 parts_list_file: str = '',
                 data_prefix: Optional[dict] = None,
                 check_files: bool = True,
                 img_suffix: str = '.jpg',
                 seg_suffix: str = '.png',
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 generate: Optional[dict] = None,
                 **kwargs) -> None:
        if generate is not None:
            # explicit opt-in (the demo configs): a synthetic copy is written first if absent
            from .synthetic_pascal_mt import generate_synthetic_pascal_mt
            generate_synthetic_pascal_mt(data_root, **generate)
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f'tasks must be a non-empty subset of {TASKS}, got {list(tasks)}')
        self.tasks = [t for t in TASKS if t in tasks]
        self.split = split
        self.check_files = check_files
        self.img_suffix = img_suffix
        self.seg_suffix = seg_suffix
        prefix = dict(img_path='JPEGImages', semseg_voc='semseg/VOC12',
                      semseg_context='semseg/pascal-context', parts='human_parts',
                      sal='sal_distill', normals='normals_distill')
        prefix.update(data_prefix or {})
        self.parts_list_file = parts_list_file or f'ImageSets/Parts/{split}.txt'
        if data_root and not osp.isabs(self.parts_list_file):
            self.parts_list_file = osp.join(data_root, self.parts_list_file)
        super().__init__(ann_file=ann_file or f'ImageSets/Context/{split}.txt',
                         data_root=data_root, data_prefix=prefix, pipeline=list(pipeline),
                         **kwargs)
        self._metainfo['tasks'] = tuple(self.tasks)

    def _read_text(self, path: str, what: str) -> str:
        try:
            return fileio.get_text(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'PASCAL-Context multi-task: {what} not found: {path}') from e

    def load_data_list(self) -> List[dict]:
        """One data info per id of ``ann_file`` (see the class docstring for the keys)."""
        ids = [line.strip() for line in self._read_text(self.ann_file, 'image-id list')
               .splitlines() if line.strip()]
        if not ids:
            # an empty list would fail in mmengine's serialisation or hang an infinite sampler
            raise ValueError(f'PASCAL-Context multi-task: the image-id list (ann_file) '
                             f'{osp.abspath(self.ann_file)} lists no samples (it is empty); '
                             f'write one image id per line or point ann_file at another split')
        person = None
        if 'parts' in self.tasks:
            person = json.loads(self._read_text(self.parts_list_file, 'person list'))
            absent = [i for i in ids if i not in person]
            if absent:
                raise ValueError(f'{self.parts_list_file} has no entry for {len(absent)} ids of '
                                 f'{self.ann_file}, e.g. {absent[:3]}')

        p = self.data_prefix
        data_list, missing = [], []
        for img_id in ids:
            info = dict(img_path=osp.join(p['img_path'], img_id + self.img_suffix), img_id=img_id,
                        tasks=list(self.tasks))
            required = [info['img_path']]
            if 'semseg' in self.tasks:
                voc = osp.join(p['semseg_voc'], img_id + self.seg_suffix)
                context = osp.join(p['semseg_context'], img_id + self.seg_suffix)
                # VOC12 labels are the finer official ones where they exist; the rest of the
                # 10103 images only have the PASCAL-Context-derived 21-class maps.
                if fileio.exists(voc):
                    info['seg_map_path'] = voc
                elif fileio.exists(context):
                    info['seg_map_path'] = context
                else:
                    info['seg_map_path'] = context
                    missing.append(f'{voc} (nor {context})')
            if 'parts' in self.tasks:
                info['has_person'] = _has_person(person[img_id])
                info['parts_path'] = osp.join(p['parts'], img_id + '.mat')
                if info['has_person']:
                    required.append(info['parts_path'])
            if 'sal' in self.tasks:
                info['sal_path'] = osp.join(p['sal'], img_id + self.seg_suffix)
                required.append(info['sal_path'])
            if 'normals' in self.tasks:
                info['normals_path'] = osp.join(p['normals'], img_id + self.seg_suffix)
                required.append(info['normals_path'])
            if self.check_files:
                missing.extend(f for f in required if not fileio.exists(f))
            data_list.append(info)

        if missing:
            shown = '\n  '.join(missing[:10])
            more = f'\n  ... and {len(missing) - 10} more' if len(missing) > 10 else ''
            raise FileNotFoundError(
                f'PASCAL-Context multi-task ({self.split}, tasks {self.tasks}): {len(missing)} '
                f'file(s) missing under {self.data_root}:\n  {shown}{more}')
        return data_list
