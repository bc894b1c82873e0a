import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData

from mmpeft.datasets import PascalContextMultiTaskDataset
from mmpeft.datasets.transforms import PackMultiTaskInputs
from mmpeft.structures import MultiTaskDataSample


def test_data_sample_fields_are_typed():
    s = MultiTaskDataSample(metainfo=dict(tasks=['sal']))
    s.pred_sal = PixelData(data=torch.full((1, 2, 3), 0.7))
    assert 'pred_sal' in s and s.pred_sal.shape == (2, 3)
    assert s.to_dict()['pred_sal']['data'].shape == (1, 2, 3)
    assert s.to_dict()['tasks'] == ['sal']
    with pytest.raises(AssertionError):
        s.gt_sal = torch.zeros(1, 2, 3)     # must be PixelData
    del s.pred_sal
    assert 'pred_sal' not in s


def test_pack_by_hand():
    results = dict(img=np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
                   gt_semseg=np.array([[0, 1, 2, 255], [3, 4, 5, 6]], np.uint8),
                   gt_sal=np.array([[0, 1, 1, 255], [0, 0, 1, 1]], np.uint8),
                   gt_normals=np.zeros((2, 4, 3), np.float32),
                   img_path='a.jpg', ori_shape=(2, 4), img_shape=(2, 4), tasks=('semseg', 'sal'),
                   unrelated='x')
    results['gt_normals'][0, 1] = [0, 0, 1]
    out = PackMultiTaskInputs()(results)
    assert out['inputs'].dtype == torch.uint8 and out['inputs'].shape == (3, 2, 4)
    assert out['inputs'][2, 1, 3] == results['img'][1, 3, 2]
    s = out['data_samples']
    assert s.gt_semseg.data.dtype == torch.int64 and s.gt_semseg.data.shape == (1, 2, 4)
    assert s.gt_semseg.data[0, 0, 3] == 255 and s.gt_sal.data[0, 1, 2] == 1
    assert s.gt_normals.data.shape == (3, 2, 4) and s.gt_normals.data[2, 0, 1] == 1
    assert 'gt_parts' not in s
    assert s.metainfo == dict(img_path='a.jpg', ori_shape=(2, 4), img_shape=(2, 4),
                              tasks=['semseg', 'sal'])


def test_full_train_pipeline_from_config(pascal_mt_root):
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadMultiTaskAnnotations'),
        dict(type='MultiTaskRandomFlip', prob=0.5),
        dict(type='MultiTaskRandomScale', scale_range=(0.75, 1.25)),
        dict(type='MultiTaskRandomRotate', degree=20),
        dict(type='MultiTaskResize', scale=(40, 36)),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackMultiTaskInputs'),
    ]
    with DefaultScope.overwrite_default_scope('mmseg'):   # PhotoMetricDistortion is mmseg's
        ds = PascalContextMultiTaskDataset(data_root=pascal_mt_root, pipeline=train_pipeline)
        assert len(Compose(train_pipeline).transforms) == 8
    np.random.seed(0)
    for i in range(3):
        out = ds[i]
        s = out['data_samples']
        assert out['inputs'].shape == (3, 36, 40) and out['inputs'].dtype == torch.uint8
        assert s.gt_semseg.shape == (36, 40) and s.gt_normals.data.shape == (3, 36, 40)
        assert set(s.gt_semseg.data.unique().tolist()) <= set(range(21)) | {255}
        parts = set(s.gt_parts.data.unique().tolist())
        assert parts <= set(range(7)) | {255} and (parts == {255}) == (i == 2)
        assert set(s.gt_sal.data.unique().tolist()) <= {0, 1, 255}
        norm = s.gt_normals.data.norm(dim=0)
        assert torch.all(((norm - 1).abs() < 1e-5) | (norm == 0)) and (norm > 0).any()
        assert s.metainfo['img_shape'] == (36, 40) and isinstance(s.metainfo['flip'], bool)
