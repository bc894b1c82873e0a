"""Packing a multi-task sample into ``inputs`` + :class:`~mmpeft.structures.MultiTaskDataSample`."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform, to_tensor
from mmengine.structures import PixelData

from mmpeft.registry import TRANSFORMS
from mmpeft.structures.multitask_data_sample import TASKS, MultiTaskDataSample

DEFAULT_META_KEYS = ('img_path', 'img_id', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                     'flip', 'flip_direction', 'tasks')


@TRANSFORMS.register_module()
class PackMultiTaskInputs(BaseTransform):
    """Pack the image and the ``gt_<task>`` arrays for a multi-task model.

    Returns ``dict(inputs=img, data_samples=sample)``:

    - ``inputs``: ``(C, H, W)`` tensor of the image's dtype (uint8 in the standard pipelines), in
      the channel order it was loaded with (mmcv's ``LoadImageFromFile``: BGR).
    - ``sample``: :class:`MultiTaskDataSample` with ``gt_semseg`` / ``gt_parts`` / ``gt_sal`` as
      ``(1, H, W)`` int64 and ``gt_normals`` as ``(3, H, W)`` float32 (those loaded), and the
      ``meta_keys`` found in ``results`` as metainfo.

    Args:
        meta_keys: keys copied into the sample's metainfo when present.
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """Pack ``results`` (see the class docstring)."""
        packed = dict()
        if 'img' in results:
            img = results['img']
            if img.ndim < 3:
                img = img[..., None]
            packed['inputs'] = to_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))

        sample = MultiTaskDataSample()
        for task in TASKS:
            key = f'gt_{task}'
            if key not in results:
                continue
            arr = results[key]
            if task == 'normals':
                data = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), np.float32))
            else:
                data = torch.from_numpy(arr[None].astype(np.int64))
            setattr(sample, key, PixelData(data=data))

        meta = {k: results[k] for k in self.meta_keys if k in results}
        if 'tasks' in meta:
            meta['tasks'] = list(meta['tasks'])
        sample.set_metainfo(meta)
        packed['data_samples'] = sample
        return packed

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
