"""Bad dataset inputs end in an error naming the file: empty split files, corrupt label files and
label values outside the classes."""
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mmpeft.datasets import PascalContextMultiTaskDataset, SyntheticSegDataset, VTAB1kDataset
from mmpeft.datasets.synthetic_pascal_mt import generate_synthetic_pascal_mt
from mmpeft.datasets.transforms import LoadMultiTaskAnnotations

SIZE = (16, 24)


@pytest.fixture(scope='module')
def mt_root(tmp_path_factory):
    return generate_synthetic_pascal_mt(str(tmp_path_factory.mktemp('robust_data') / 'PASCAL_MT'),
                                        num_train=3, num_val=1, size=SIZE, seed=0)


def _empty_split(tmp_path, blank_lines: bool) -> str:
    path = tmp_path / 'empty split.txt'
    path.write_text('\n  \n\n' if blank_lines else '')
    return str(path)


@pytest.mark.parametrize('serialize', [True, False])
@pytest.mark.parametrize('blank_lines', [False, True])
def test_empty_split_file_is_named(mt_root, seg_data_root, tmp_path, serialize, blank_lines):
    ann = _empty_split(tmp_path, blank_lines)
    builds = [
        lambda: PascalContextMultiTaskDataset(data_root=mt_root, ann_file=ann,
                                              serialize_data=serialize),
        lambda: SyntheticSegDataset(data_root=seg_data_root, ann_file=ann, serialize_data=serialize,
                                    data_prefix=dict(img_path='img_dir/train',
                                                     seg_map_path='ann_dir/train')),
    ]
    for build in builds:
        with pytest.raises(ValueError) as e:
            build()
        assert ann in str(e.value) and 'no samples' in str(e.value)
    # VTAB-1k: the list file sits at a fixed place inside the task folder
    (tmp_path / 'vtab' / 'dtd').mkdir(parents=True)
    lst = tmp_path / 'vtab' / 'dtd' / 'train800val200.txt'
    lst.write_text(open(ann).read())
    with pytest.raises(ValueError) as e:
        VTAB1kDataset(data_root=str(tmp_path / 'vtab'), task='dtd', serialize_data=serialize)
    assert str(lst) in str(e.value) and 'no samples' in str(e.value)


def test_empty_image_folder_is_named(tmp_path):
    (tmp_path / 'img_dir' / 'train').mkdir(parents=True)
    (tmp_path / 'ann_dir' / 'train').mkdir(parents=True)
    with pytest.raises(ValueError) as e:
        SyntheticSegDataset(data_root=str(tmp_path), data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'))
    assert str(tmp_path / 'img_dir' / 'train') in str(e.value) and 'no samples' in str(e.value)


@pytest.fixture(scope='module')
def info0(mt_root) -> dict:
    """The data info of image 0 (it has a person, so all four tasks have files)."""
    info = PascalContextMultiTaskDataset(data_root=mt_root).get_data_info(0)
    assert info['img_id'] == '2008_000000' and info['has_person']
    return dict(info, ori_shape=SIZE)


@pytest.mark.parametrize('task,key', [('semseg', 'seg_map_path'), ('sal', 'sal_path'),
                                      ('normals', 'normals_path'), ('parts', 'parts_path')])
@pytest.mark.parametrize('damage', ['truncated', 'text', 'empty'])
def test_corrupt_label_file_is_named(info0, tmp_path, task, key, damage):
    good = info0[key]
    data = open(good, 'rb').read()
    bad = {'truncated': data[:len(data) // 2], 'text': b'<html>404 not found</html>\n' * 4,
           'empty': b''}[damage]
    path = tmp_path / ('bad_' + osp.basename(good))
    path.write_bytes(bad)
    load = LoadMultiTaskAnnotations(tasks=[task])
    assert load(dict(info0))[f'gt_{task}'].shape[:2] == SIZE  # the intact file loads
    with pytest.raises(ValueError) as e:
        load(dict(info0, **{key: str(path)}))
    assert str(path) in str(e.value) and 'corrupt' in str(e.value)


def _write_label(path, label: np.ndarray) -> str:
    Image.fromarray(label).save(path)
    return str(path)


def test_semseg_value_out_of_range_is_named(info0, tmp_path):
    load = LoadMultiTaskAnnotations(tasks=['semseg'])
    label = np.zeros(SIZE, np.uint8)
    label[0, :5] = 20
    label[1, :5] = 255  # ignore: fine
    label[2, 3] = 7
    ok = _write_label(tmp_path / 'ok.png', label)
    np.testing.assert_array_equal(load(dict(info0, seg_map_path=ok))['gt_semseg'], label)

    label[5, 5:8] = 60
    label[6, 0] = 21
    bad = _write_label(tmp_path / 'bad.png', label)
    with pytest.raises(ValueError) as e:
        load(dict(info0, seg_map_path=bad))
    msg = str(e.value)
    assert bad in msg and '[21, 60]' in msg and '21 classes' in msg and '255' in msg
    assert '4 pixels' in msg

    # a 16-bit map: 256 must not wrap to 0 (background) on the way to uint8
    wide = np.zeros(SIZE, np.uint16)
    wide[3, 3] = 256
    path16 = str(tmp_path / 'wide.png')
    Image.fromarray(wide).save(path16)
    with pytest.raises(ValueError, match=r'\[256\]'):
        load(dict(info0, seg_map_path=path16))

    # another label set is allowed when declared
    label[5:7] = 0
    label[0, 0] = 40
    more = _write_label(tmp_path / 'more.png', label)
    wide_load = LoadMultiTaskAnnotations(tasks=['semseg'], num_semseg_classes=59)
    np.testing.assert_array_equal(wide_load(dict(info0, seg_map_path=more))['gt_semseg'],
                                  label)
