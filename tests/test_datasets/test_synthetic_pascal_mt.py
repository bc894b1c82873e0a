import filecmp
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mmpeft.datasets.synthetic_pascal_mt import MARKER, generate_synthetic_pascal_mt

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_layout_and_lists(pascal_mt_root, pascal_mt_size):
    root, SIZE = pascal_mt_root, pascal_mt_size
    for split, n, year in (('train', 6, 2008), ('val', 3, 2009)):
        with open(osp.join(root, 'ImageSets/Context', split + '.txt')) as f:
            ids = f.read().split()
        assert ids == [f'{year}_{i:06d}' for i in range(n)]
        with open(osp.join(root, 'ImageSets/Parts', split + '.txt')) as f:
            persons = json.load(f)
        assert sorted(persons) == ids
        # image i has a person iff i % 3 != 2
        assert [15 in persons[i] for i in ids] == [i % 3 != 2 for i in range(n)]
        for i, img_id in enumerate(ids):
            img = Image.open(osp.join(root, 'JPEGImages', img_id + '.jpg'))
            assert img.mode == 'RGB' and img.size == (SIZE[1], SIZE[0])
            for sub in ('semseg/pascal-context', 'sal_distill', 'normals_distill'):
                assert osp.isfile(osp.join(root, sub, img_id + '.png'))
            assert osp.isfile(osp.join(root, 'human_parts', img_id + '.mat'))
            voc = osp.join(root, 'semseg/VOC12', img_id + '.png')
            assert osp.isfile(voc) == (i % 2 == 0)
            if i % 2 == 0:
                assert Image.open(voc).mode == 'P'


def test_mat_has_pascal_part_nesting(pascal_mt_root, pascal_mt_size):
    SIZE = pascal_mt_size
    mat = scipy.io.loadmat(osp.join(pascal_mt_root, 'human_parts', '2008_000000.mat'))
    anno = mat['anno']
    assert anno.shape == (1, 1) and set(anno.dtype.names) == {'imname', 'objects'}
    assert str(anno[0, 0]['imname'][0]) == '2008_000000'
    objects = anno[0, 0]['objects']
    assert objects.shape[0] == 1
    assert set(objects.dtype.names) == {'class', 'class_ind', 'mask', 'parts'}
    person = [o for o in objects[0] if str(o['class'][0]) == 'person']
    assert len(person) == 1 and int(person[0]['class_ind'][0, 0]) == 15
    names = {str(p['part_name'][0]) for p in person[0]['parts'][0]}
    assert {'head', 'hair', 'neck', 'torso', 'luarm', 'rlarm', 'lhand', 'ruleg', 'llleg',
            'rfoot'} <= names
    assert person[0]['mask'].shape == SIZE and person[0]['mask'].dtype == np.uint8


def test_deterministic_and_seed_dependent(tmp_path):
    a = generate_synthetic_pascal_mt(str(tmp_path / 'a'), 2, 1, (16, 20), seed=3)
    b = generate_synthetic_pascal_mt(str(tmp_path / 'b'), 2, 1, (16, 20), seed=3)
    c = generate_synthetic_pascal_mt(str(tmp_path / 'c'), 2, 1, (16, 20), seed=4)
    files = ['JPEGImages/2008_000001.jpg', 'semseg/pascal-context/2008_000001.png',
             'normals_distill/2009_000000.png', 'sal_distill/2008_000000.png',
             'human_parts/2008_000000.mat', 'semseg/VOC12/2008_000000.png',
             'ImageSets/Parts/train.txt']
    assert all(filecmp.cmp(osp.join(a, f), osp.join(b, f), shallow=False) for f in files)
    assert not filecmp.cmp(osp.join(a, files[0]), osp.join(c, files[0]), shallow=False)
    # no temporary folder is left behind
    assert sorted(os.listdir(tmp_path)) == ['a', 'b', 'c']


def test_existing_folders(tmp_path):
    root = generate_synthetic_pascal_mt(str(tmp_path / 'd'), 1, 1, (8, 8))
    stamp = os.stat(osp.join(root, MARKER)).st_mtime_ns
    # same arguments: reused, not rewritten
    assert generate_synthetic_pascal_mt(root, 1, 1, (8, 8)) == root
    assert os.stat(osp.join(root, MARKER)).st_mtime_ns == stamp
    with pytest.raises(ValueError, match='overwrite=True'):
        generate_synthetic_pascal_mt(root, 2, 1, (8, 8))
    generate_synthetic_pascal_mt(root, 2, 1, (8, 8), overwrite=True)
    with open(osp.join(root, 'ImageSets/Context/train.txt')) as f:
        assert len(f.read().split()) == 2
    real = tmp_path / 'real'
    real.mkdir()
    with pytest.raises(FileExistsError, match='not a synthetic'):
        generate_synthetic_pascal_mt(str(real), 1, 1, (8, 8), overwrite=True)


def test_cli(tmp_path, capsys):
    # run the tool's main() in-process: a subprocess would spend seconds re-importing the stack
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_pascal_mt',
        osp.join(REPO, 'tools/dataset_converters/make_synthetic_pascal_mt.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(tmp_path / 'cli'), '--num-train', '2', '--num-val', '1', '--size', '12', '20',
               '--seed', '1'])
    assert capsys.readouterr().out.strip() == str(tmp_path / 'cli')
    with open(osp.join(tmp_path / 'cli', MARKER)) as f:
        assert json.load(f) == dict(num_train=2, num_val=1, size=[12, 20], seed=1)
    img = Image.open(osp.join(tmp_path / 'cli', 'JPEGImages', '2009_000000.jpg'))
    assert img.size == (20, 12)


def _generate(root):
    generate_synthetic_pascal_mt(root, 3, 2, (24, 24), seed=5)


def test_concurrent_writers_leave_one_complete_folder(tmp_path):
    import multiprocessing as mp
    root = str(tmp_path / 'race')
    ctx = mp.get_context('fork')      # the parent has everything imported already
    procs = [ctx.Process(target=_generate, args=(root, )) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert os.listdir(tmp_path) == ['race']          # the losers removed their copies
    reference = generate_synthetic_pascal_mt(str(tmp_path / 'ref'), 3, 2, (24, 24), seed=5)
    cmp = filecmp.dircmp(root, reference)
    assert not cmp.left_only and not cmp.right_only
    for sub in ('JPEGImages', 'human_parts', 'normals_distill', 'semseg/VOC12'):
        names = sorted(os.listdir(osp.join(reference, sub)))
        assert names == sorted(os.listdir(osp.join(root, sub)))
        match, mismatch, errors = filecmp.cmpfiles(osp.join(root, sub), osp.join(reference, sub),
                                                   names, shallow=False)
        assert not mismatch and not errors
