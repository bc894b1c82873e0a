import numpy as np
import pytest
import scipy.io

from mmpeft.datasets import PERSON_PART_GROUPS, read_human_parts


def _struct(fields, rows):
    arr = np.zeros((1, len(rows)), dtype=[(f, 'O') for f in fields])
    for j, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[0, j][f] = v
    return arr


def _mask(shape, ys, xs):
    m = np.zeros(shape, np.uint8)
    m[ys, xs] = 1
    return m


def _write(path, objects):
    anno = np.zeros((1, 1), dtype=[('imname', 'O'), ('objects', 'O')])
    anno[0, 0]['imname'] = 'x'
    anno[0, 0]['objects'] = _struct(('class', 'class_ind', 'mask', 'parts'), objects)
    scipy.io.savemat(path, {'anno': anno}, do_compression=True)


def test_grouping_is_the_documented_six_parts():
    groups = {}
    for name, g in PERSON_PART_GROUPS.items():
        groups.setdefault(g, set()).add(name)
    assert groups == {
        1: {'head', 'hair', 'leye', 'reye', 'lear', 'rear', 'lebrow', 'rebrow', 'nose', 'mouth'},
        2: {'torso', 'neck'},
        3: {'luarm', 'ruarm'},
        4: {'llarm', 'rlarm', 'lhand', 'rhand'},
        5: {'luleg', 'ruleg'},
        6: {'llleg', 'rlleg', 'lfoot', 'rfoot'},
    }


def test_reader_on_hand_made_mat(tmp_path):
    shape = (6, 5)
    m = lambda ys, xs: _mask(shape, ys, xs)  # noqa: E731
    person_parts = _struct(('part_name', 'mask'), [
        ('head', m(0, slice(0, 2))), ('hair', m(0, 0)),       # hair painted over head: still 1
        ('neck', m(1, 0)), ('torso', m(1, 1)),
        ('luarm', m(2, 0)), ('llarm', m(2, 1)), ('rhand', m(2, 2)),
        ('ruleg', m(3, 0)), ('rlleg', m(3, 1)), ('lfoot', m(3, 2)),
    ])
    dog_parts = _struct(('part_name', 'mask'), [('head', m(5, 4))])
    _write(tmp_path / 'a.mat', [
        ('person', np.array([[15]], np.uint8), m(slice(0, 4), slice(0, 3)), person_parts),
        ('dog', np.array([[12]], np.uint8), m(5, slice(3, 5)), dog_parts),     # not a person
        ('person', np.array([[15]], np.uint8), m(4, 4), np.zeros((0, 0))),     # no parts
    ])
    label = read_human_parts(str(tmp_path / 'a.mat'), shape)
    expected = np.zeros(shape, np.uint8)
    expected[0, 0:2] = 1
    expected[1, 0:2] = 2
    expected[2, :3] = [3, 4, 4]
    expected[3, :3] = [5, 6, 6]
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)
    # bytes give the same result
    with open(tmp_path / 'a.mat', 'rb') as f:
        np.testing.assert_array_equal(read_human_parts(f.read(), shape), expected)


def test_reader_errors_name_the_file(tmp_path):
    shape = (3, 3)
    bad = _struct(('part_name', 'mask'), [('tail', _mask(shape, 0, 0))])
    _write(tmp_path / 'bad.mat', [('person', np.array([[15]], np.uint8), _mask(shape, 0, 0), bad)])
    with pytest.raises(ValueError, match=r"bad\.mat.*'tail'"):
        read_human_parts(str(tmp_path / 'bad.mat'), shape)
    good = _struct(('part_name', 'mask'), [('head', _mask(shape, 0, 0))])
    _write(tmp_path / 'small.mat', [('person', np.array([[15]], np.uint8), _mask(shape, 0, 0),
                                     good)])
    with pytest.raises(ValueError, match=r'small\.mat.*\(3, 3\).*\(4, 4\)'):
        read_human_parts(str(tmp_path / 'small.mat'), (4, 4))
    scipy.io.savemat(tmp_path / 'other.mat', {'foo': np.zeros(2)})
    with pytest.raises(ValueError, match=r'other\.mat.*anno'):
        read_human_parts(str(tmp_path / 'other.mat'), shape)
