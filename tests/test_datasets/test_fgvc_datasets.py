"""The FGVC datasets read VPT's JSON split files, and full CIFAR-100 its python pickle release, through
the HST configs' dataset dicts and pipelines.

The split files, images and pickles are written here in the releases' layouts with known contents; the
expected samples (paths, labels, pixels) are computed from what was written, not from the readers.
"""
import functools
import json
import os
import os.path as osp
import pickle

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmpeft  # noqa: F401
from mmpeft_testing import metafiles_read_once

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FGVC_DIR = osp.join(ROOT, 'configs', 'hst', 'fgvc')

# config part: (dataset type, image folder of the VPT release relative to the data root)
LAYOUTS = {
    'cub200': ('CUB200Dataset', 'images'),
    'nabirds': ('NABirdsDataset', 'images'),
    'oxford-flowers': ('OxfordFlowersDataset', ''),
    'stanford-dogs': ('StanfordDogsDataset', 'Images'),
    'stanford-cars': ('StanfordCarsDataset', ''),
}
# labels as NABirds has them in the release: not contiguous
LABELS = [817, 295, 1010, 295, 817, 1010]


@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    with metafiles_read_once():
        yield


@functools.lru_cache(maxsize=None)
def load(path: str) -> Config:
    """Configs read once: each read of an ``mmpretrain::`` base re-reads the package's metadata."""
    return Config.fromfile(path)


def build(ds_cfg: dict):
    from mmpretrain.registry import DATASETS
    # no serialisation: mmengine's runs a full gc.collect per dataset (about 1 s here each), and the
    # samples are the same either way
    ds_cfg = dict(ds_cfg, serialize_data=False)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return DATASETS.build(ds_cfg)


def write_release(root: str, image_dir: str, labels=LABELS) -> dict:
    """VPT's layout: {train,val,test}.json mapping image paths (relative to the image folder) to labels.
    train: the first 3 images, val: the next 1, test: the last 2. Returns split -> {path: label}."""
    import cv2
    rng = np.random.default_rng(0)
    splits = {'train': {}, 'val': {}, 'test': {}}
    for i, label in enumerate(labels):
        rel = f'{label:04d}.Some_Bird/img {i}.jpg'  # a class sub-folder and a space, as the releases have
        path = osp.join(root, image_dir, rel)
        os.makedirs(osp.dirname(path), exist_ok=True)
        cv2.imwrite(path, rng.integers(0, 256, (30 + 4 * i, 50, 3), dtype=np.uint8))
        split = 'train' if i < 3 else 'val' if i == 3 else 'test'
        splits[split][rel] = label
    for split, anno in splits.items():
        with open(osp.join(root, f'{split}.json'), 'w') as f:
            json.dump(anno, f)
    return splits


def config_dataset(name: str, key: str, root: str, **overrides) -> dict:
    cfg = load(osp.join(FGVC_DIR, f'vit-b-in21k_hst_{name}.py'))
    return dict(cfg[key].dataset.to_dict(), data_root=root, **overrides)


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_vpt_json_splits_through_the_config(name, tmp_path):
    dtype, image_dir = LAYOUTS[name]
    root = str(tmp_path / name)
    splits = write_release(root, image_dir)
    # the three distinct labels in sorted order become 0, 1, 2
    index = {295: 0, 817: 1, 1010: 2}
    train = build(config_dataset(name, 'train_dataloader', root, num_classes=3))
    assert type(train).__name__ == dtype and train.split == 'trainval'
    expected = [(osp.join(root, image_dir, p), index[c]) for s in ('train', 'val') for p, c in splits[s].items()]
    got = [(train.get_data_info(i)['img_path'], train.get_data_info(i)['gt_label']) for i in range(len(train))]
    assert got == expected
    test = build(config_dataset(name, 'test_dataloader', root, num_classes=3))
    assert [test.get_data_info(i)['gt_label'] for i in range(len(test))] == [index[c] for c in splits['test'].values()]
    # the configs' pipelines: RandomResizedCrop 224 for training; short side 256, centre 224 for testing
    assert train[0]['inputs'].shape == (3, 224, 224)
    item = test[1]
    assert item['inputs'].shape == (3, 224, 224) and int(item['data_samples'].gt_label) == index[LABELS[5]]
    # the other splits on their own
    for split, n in (('train', 3), ('val', 1)):
        assert len(build(config_dataset(name, 'train_dataloader', root, num_classes=3, split=split))) == n


def test_default_num_classes_and_errors_name_the_file(tmp_path):
    from mmpeft.datasets import (
        CUB200Dataset,
        NABirdsDataset,
        OxfordFlowersDataset,
        StanfordCarsDataset,
        StanfordDogsDataset,
    )
    assert [c.NUM_CLASSES for c in (CUB200Dataset, NABirdsDataset, OxfordFlowersDataset, StanfordDogsDataset,
                                    StanfordCarsDataset)] == [200, 555, 102, 120, 196]
    root = str(tmp_path / 'cub')
    write_release(root, 'images')
    base = dict(type='CUB200Dataset', data_root=root)
    # the release holds 3 classes, the dataset's default is 200
    with pytest.raises(ValueError, match=r'train\.json holds 3 distinct labels but the dataset has num_classes=200'):
        build(base)
    with pytest.raises(ValueError, match=r"split 'trainval200' is not one of"):
        build(dict(base, split='trainval200', num_classes=3))
    with pytest.raises(FileNotFoundError, match=r'image folder .*pictures not found'):
        build(dict(base, num_classes=3, image_dir='pictures'))
    # a test label that training never saw
    with open(osp.join(root, 'test.json'), 'w') as f:
        json.dump({'x/a.jpg': 295, 'x/b.jpg': 4}, f)
    with pytest.raises(ValueError, match=r"test\.json: label 4 of 'x/b\.jpg' is not among the labels of train\.json"):
        build(dict(base, split='test', num_classes=3))
    with open(osp.join(root, 'test.json'), 'w') as f:
        json.dump({'x/a.jpg': 'sparrow'}, f)
    with pytest.raises(ValueError, match=r"test\.json: label of 'x/a\.jpg' is 'sparrow'"):
        build(dict(base, split='test', num_classes=3))
    with open(osp.join(root, 'test.json'), 'w') as f:
        json.dump({}, f)
    with pytest.raises(ValueError, match=r'test\.json: expected a non-empty JSON object'):
        build(dict(base, split='test', num_classes=3))
    os.remove(osp.join(root, 'val.json'))
    with pytest.raises(FileNotFoundError, match=r'split file .*val\.json not found'):
        build(dict(base, num_classes=3))


def write_cifar100(root: str):
    """The python pickle release: cifar-100-python/{train,test,meta}, rows of 3072 bytes (R, G, B planes)."""
    rng = np.random.default_rng(1)
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder)
    out = {}
    for split, n in (('train', 5), ('test', 3)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, n)]
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump({'data': data, 'fine_labels': fine, 'coarse_labels': [0] * n}, f)
        out[split] = (data, fine)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump({'fine_label_names': [f'class{i}' for i in range(100)]}, f)
    return out


@pytest.mark.parametrize('weights', ['in21k', 'mae'])
def test_cifar100_pickle_release_through_the_config(weights, tmp_path, monkeypatch):
    import mmpretrain.datasets.cifar as cifar
    # tiny stand-in files cannot match the release's md5 sums, which mmpretrain checks
    monkeypatch.setattr(cifar, 'check_md5', lambda *args, **kwargs: True)
    written = write_cifar100(str(tmp_path))
    cfg = load(osp.join(FGVC_DIR, f'vit-b-{weights}_hst_cifar100.py'))
    assert type(build(dict(cfg.train_dataloader.dataset.to_dict(), data_root=str(tmp_path)))).__name__ == 'CIFAR100'
    for key, split in (('train_dataloader', 'train'), ('test_dataloader', 'test')):
        ds = build(dict(cfg[key].dataset.to_dict(), data_root=str(tmp_path)))
        data, fine = written[split]
        assert len(ds) == len(fine)
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert info['gt_label'] == fine[i]
            # row i: 1024 R, then G, then B values of a 32 x 32 image -> HWC in RGB order
            np.testing.assert_array_equal(info['img'], data[i].reshape(3, 32, 32).transpose(1, 2, 0))
        item = ds[0]
        assert item['inputs'].shape == (3, 224, 224) and int(item['data_samples'].gt_label) == fine[0]
    # RGB arrays: the preprocessor must not swap channels
    assert cfg.data_preprocessor.to_rgb is False
