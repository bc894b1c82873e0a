import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mmpeft.datasets import PascalContextMultiTaskDataset
from mmpeft.datasets.transforms import LoadMultiTaskAnnotations, decode_normals
from mmpeft.structures import MultiTaskDataSample

LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
        dict(type='PackMultiTaskInputs')]


def _png(root, sub, img_id):
    return np.array(Image.open(osp.join(root, sub, img_id + '.png')))


def test_data_list(pascal_mt_root):
    ds = PascalContextMultiTaskDataset(data_root=pascal_mt_root, split='train')
    assert len(ds) == 6
    assert ds.metainfo['tasks'] == ('semseg', 'parts', 'sal', 'normals')
    assert len(ds.metainfo['classes']) == 21 and len(ds.metainfo['part_classes']) == 7
    for i in range(6):
        info = ds.get_data_info(i)
        img_id = f'2008_{i:06d}'
        assert info['img_id'] == img_id
        assert info['img_path'] == osp.join(pascal_mt_root, 'JPEGImages', img_id + '.jpg')
        # VOC12 labels exist for even images only: the rest fall back to pascal-context
        sub = 'VOC12' if i % 2 == 0 else 'pascal-context'
        assert info['seg_map_path'] == osp.join(pascal_mt_root, 'semseg', sub, img_id + '.png')
        assert info['has_person'] == (i % 3 != 2)
        assert info['parts_path'].endswith(f'human_parts/{img_id}.mat')
    val = PascalContextMultiTaskDataset(data_root=pascal_mt_root, split='val', tasks=['sal'])
    assert len(val) == 3 and val.get_data_info(0)['tasks'] == ['sal']
    assert 'seg_map_path' not in val.get_data_info(0)


def test_all_four_tasks_load(pascal_mt_root, pascal_mt_size):
    ds = PascalContextMultiTaskDataset(data_root=pascal_mt_root, split='train', pipeline=LOAD)
    h, w = pascal_mt_size
    for i in (0, 1, 2):
        img_id = f'2008_{i:06d}'
        out = ds[i]
        assert out['inputs'].shape == (3, h, w) and out['inputs'].dtype == torch.uint8
        s = out['data_samples']
        assert isinstance(s, MultiTaskDataSample)
        assert s.metainfo['tasks'] == ['semseg', 'parts', 'sal', 'normals']
        assert s.metainfo['ori_shape'] == (h, w) and s.metainfo['img_id'] == img_id
        for key in ('gt_semseg', 'gt_parts', 'gt_sal'):
            assert s.get(key).data.shape == (1, h, w) and s.get(key).data.dtype == torch.int64
        assert s.gt_normals.data.shape == (3, h, w) and s.gt_normals.data.dtype == torch.float32

        semseg = s.gt_semseg.data[0].numpy()
        sub = 'semseg/VOC12' if i % 2 == 0 else 'semseg/pascal-context'
        np.testing.assert_array_equal(semseg, _png(pascal_mt_root, sub, img_id))
        assert set(np.unique(semseg)) <= set(range(21)) | {255}
        assert (semseg == 255).any() == (i % 2 == 0)       # only VOC12 has void outlines

        parts = s.gt_parts.data[0].numpy()
        context = _png(pascal_mt_root, 'semseg/pascal-context', img_id)
        if i % 3 != 2:
            assert set(np.unique(parts)) == set(range(7))    # background + all six parts
            assert np.all(context[parts > 0] == 15)          # parts lie on the person
            assert (parts[context == 15] > 0).mean() > 0.95  # ... and cover it
        else:
            assert np.all(parts == 255)                      # no person: all ignore

        sal = s.gt_sal.data[0].numpy()
        grey = _png(pascal_mt_root, 'sal_distill', img_id)
        np.testing.assert_array_equal(sal, (grey > 127.5).astype(np.int64))
        assert set(np.unique(grey)) == {0, 100, 140, 230}    # halo 100 -> 0, rim 140 -> 1
        assert sal[grey == 140].all() and not sal[grey == 100].any()

        normals = s.gt_normals.data.numpy()
        raw = _png(pascal_mt_root, 'normals_distill', img_id)
        norm = np.linalg.norm(normals, axis=0)
        invalid = ~raw.any(-1)
        assert invalid.any() == (i % 2 == 1)                 # odd images: top rows invalid
        np.testing.assert_allclose(norm[~invalid], 1.0, atol=1e-5)
        assert np.all(norm[invalid] == 0)
        expected = raw.astype(np.float64) * 2 / 255 - 1
        cos = (normals.transpose(1, 2, 0)[~invalid] * expected[~invalid]).sum(-1)
        assert np.all(cos / np.linalg.norm(expected[~invalid], axis=-1) > 0.9999)


def test_decode_normals_by_hand():
    rgb = np.array([[[255, 128, 128], [0, 0, 0], [128, 0, 128], [128, 128, 128]]], np.uint8)
    n = decode_normals(rgb)
    assert n.dtype == np.float32
    np.testing.assert_allclose(n[0, 0], [1, 0.0039, 0.0039], atol=1e-4)   # right
    np.testing.assert_array_equal(n[0, 1], 0)                              # stored (0,0,0): invalid
    np.testing.assert_allclose(n[0, 2], [0.0039, -1, 0.0039], atol=1e-4)  # y = -1: up
    np.testing.assert_array_equal(n[0, 3], 0)                              # near-zero: invalid


def test_task_subset_and_load_after_resize(pascal_mt_root, pascal_mt_size):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='MultiTaskResize', scale=(32, 32)),
                dict(type='LoadMultiTaskAnnotations'), dict(type='PackMultiTaskInputs')]
    ds = PascalContextMultiTaskDataset(data_root=pascal_mt_root, split='val',
                                       tasks=['normals', 'parts'], pipeline=pipeline,
                                       test_mode=True)
    out = ds[2]   # image 2: no person
    s = out['data_samples']
    assert out['inputs'].shape == (3, 32, 32)
    assert s.metainfo['tasks'] == ['parts', 'normals']
    assert 'gt_semseg' not in s and 'gt_sal' not in s
    # annotations loaded after the resize stay at the original size, as the metric needs
    assert s.gt_parts.shape == pascal_mt_size and s.gt_normals.shape == pascal_mt_size
    assert torch.all(s.gt_parts.data == 255)
    assert s.metainfo['scale_factor'] == (32 / pascal_mt_size[1], 32 / pascal_mt_size[0])


@pytest.fixture
def broken_root(pascal_mt_root, tmp_path):
    root = str(tmp_path / 'PASCAL_MT')
    shutil.copytree(pascal_mt_root, root)
    return root


def test_missing_files_are_named(broken_root):
    import os
    os.remove(osp.join(broken_root, 'sal_distill', '2008_000003.png'))
    with pytest.raises(FileNotFoundError, match=r'sal_distill/2008_000003\.png'):
        PascalContextMultiTaskDataset(data_root=broken_root, split='train')
    # the other tasks still load
    assert len(PascalContextMultiTaskDataset(data_root=broken_root, tasks=['semseg'])) == 6

    # without the up-front check, loading names the file
    ds = PascalContextMultiTaskDataset(data_root=broken_root, tasks=['sal'], check_files=False,
                                       pipeline=LOAD)
    with pytest.raises(FileNotFoundError, match=r'sal annotation file not found: .*2008_000003'):
        ds[3]

    # a person image without its .mat; a person-less one needs none
    os.remove(osp.join(broken_root, 'human_parts', '2008_000002.mat'))
    assert len(PascalContextMultiTaskDataset(data_root=broken_root, tasks=['parts'])) == 6
    os.remove(osp.join(broken_root, 'human_parts', '2008_000001.mat'))
    with pytest.raises(FileNotFoundError, match=r'human_parts/2008_000001\.mat'):
        PascalContextMultiTaskDataset(data_root=broken_root, tasks=['parts'])

    # neither semseg file: both are named
    os.remove(osp.join(broken_root, 'semseg/pascal-context', '2008_000001.png'))
    with pytest.raises(FileNotFoundError, match=r'VOC12/2008_000001\.png \(nor .*pascal-context'):
        PascalContextMultiTaskDataset(data_root=broken_root, tasks=['semseg'])

    os.remove(osp.join(broken_root, 'ImageSets/Parts/val.txt'))
    with pytest.raises(FileNotFoundError, match=r'person list not found: .*Parts/val\.txt'):
        PascalContextMultiTaskDataset(data_root=broken_root, split='val', tasks=['parts'])
    with pytest.raises(FileNotFoundError, match=r'image-id list not found: .*Context/test\.txt'):
        PascalContextMultiTaskDataset(data_root=broken_root, split='test')


def test_unknown_task_and_size_mismatch(pascal_mt_root):
    with pytest.raises(ValueError, match='subset'):
        PascalContextMultiTaskDataset(data_root=pascal_mt_root, tasks=['depth'])
    results = dict(ori_shape=(10, 10), tasks=['sal'],
                   sal_path=osp.join(pascal_mt_root, 'sal_distill', '2008_000000.png'))
    with pytest.raises(ValueError, match=r'2008_000000\.png.*differs'):
        LoadMultiTaskAnnotations()(results)


def test_builds_from_registry_under_mmseg_scope(pascal_mt_root):
    from mmcv.transforms import LoadImageFromFile
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS as SEG_DATASETS

    from mmpeft.datasets.transforms import PackMultiTaskInputs
    cfg = dict(type='PascalContextMultiTaskDataset', data_root=pascal_mt_root, split='val',
               pipeline=LOAD)
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = SEG_DATASETS.build(cfg)
    assert type(ds) is PascalContextMultiTaskDataset and len(ds) == 3
    assert [type(t) for t in ds.pipeline.transforms] == [
        LoadImageFromFile, LoadMultiTaskAnnotations, PackMultiTaskInputs]
