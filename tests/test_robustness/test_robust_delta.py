"""Delta checkpoints never expand onto the wrong base; merge_delta.py never overwrites an input."""
import logging
import os
import os.path as osp
import shlex
import shutil

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from mmpeft.utils.delta import DELTA_KEY, tensor_hash


def _cfg(data_root: str, work_dir: str, iters: int, name: str):
    """The tiny config; own experiment and visualizer names, since a deleted work_dir's log folder
    would otherwise be reused by mmengine's global visualizer instance."""
    from mmpeft_testing import tiny_seg_cfg
    return tiny_seg_cfg(data_root, work_dir, iters, experiment_name=name,
                        **{'visualizer.name': name})


def _train(cfg) -> Runner:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


class _Records(logging.Handler):
    """Collects the messages of mmengine's current logger while attached."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger = MMLogger.get_current_instance()
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


@pytest.fixture(scope='module')
def copied_then_retrained(seg_data_root, tmp_path_factory):
    """Issue #9 item 2: train A, copy its work_dir to B, train A again from scratch with another
    seed (A's base_weights.pth is rewritten with other frozen weights). Returns the paths and A's
    first final weights (what B's delta must reproduce)."""
    tmp = tmp_path_factory.mktemp('robust_delta')
    wa, wb = str(tmp / 'A'), str(tmp / 'B')
    first = _train(_cfg(seg_data_root, wa, 2, 'robust_delta_a1'))
    final = {k: v.detach().clone() for k, v in first.model.state_dict().items()}
    shutil.copytree(wa, wb)
    shutil.rmtree(wa)
    cfg = _cfg(seg_data_root, wa, 1, 'robust_delta_a2')
    cfg.randomness = dict(seed=123)
    _train(cfg)
    return dict(root=seg_data_root, wa=wa, wb=wb, final=final, tmp=tmp)


def test_copied_work_dir_uses_the_base_beside_the_delta(copied_then_retrained):
    s = copied_then_retrained
    delta = osp.join(s['wb'], 'iter_2.pth')
    # the recorded base is A's, which now holds other frozen weights
    recorded = torch.load(delta, map_location='cpu', weights_only=False)['meta'][DELTA_KEY]
    assert recorded['base'] == osp.join(s['wa'], 'base_weights.pth')
    new_a = torch.load(recorded['base'], weights_only=True)['state_dict']
    assert sum(not torch.equal(new_a[k], s['final'][k]) for k in recorded['frozen_shapes']) > 10
    with _Records() as log:
        full = _load_checkpoint(delta, map_location='cpu')
    for k, v in s['final'].items():
        assert torch.equal(full['state_dict'][k], v), k
    assert full['meta'][DELTA_KEY]['base'] == osp.join(s['wb'], 'base_weights.pth')
    said = [m for m in log.messages if 'beside the delta' in m]
    assert said and recorded['base'] in said[0] and osp.join(s['wb'], 'base_weights.pth') in said[0]


def test_no_matching_base_is_an_error_naming_files_hashes_and_fix(copied_then_retrained, tmp_path):
    s = copied_then_retrained
    from tools_import import merge_delta
    delta = torch.load(osp.join(s['wb'], 'iter_2.pth'), map_location='cpu', weights_only=False)
    expected = delta['meta'][DELTA_KEY]['base_hash']
    # a delta alone in a folder: only the rewritten base of A exists
    alone = tmp_path / 'alone'
    alone.mkdir()
    torch.save(delta, alone / 'iter_2.pth')
    new_hash = tensor_hash(torch.load(osp.join(s['wa'], 'base_weights.pth'),
                                      weights_only=True)['state_dict'])
    assert new_hash != expected
    for load in (lambda: _load_checkpoint(str(alone / 'iter_2.pth'), map_location='cpu'),
                 lambda: merge_delta.merge(str(alone / 'iter_2.pth'), str(tmp_path / 'o.pth'))):
        with pytest.raises(ValueError) as e:
            load()
        msg = str(e.value)
        assert osp.join(s['wa'], 'base_weights.pth') in msg
        assert expected in msg and new_hash in msg
        assert 'merge_delta.py' in msg and '--base' in msg
    assert not (tmp_path / 'o.pth').exists()
    # an explicit --base with the right tensors, re-saved elsewhere in another format, works
    moved = tmp_path / 'moved_base.pth'
    torch.save(torch.load(osp.join(s['wb'], 'base_weights.pth'), weights_only=True)['state_dict'],
               moved)
    out = merge_delta.merge(str(alone / 'iter_2.pth'), str(tmp_path / 'o.pth'), base=str(moved))
    for k, v in s['final'].items():
        assert torch.equal(out['state_dict'][k], v), k
    # ... and an explicit wrong one is refused too
    with pytest.raises(ValueError, match=expected):
        merge_delta.merge(str(alone / 'iter_2.pth'), str(tmp_path / 'o2.pth'),
                          base=osp.join(s['wa'], 'base_weights.pth'))


def test_resume_in_copied_work_dir_continues_on_its_own_base(copied_then_retrained):
    s = copied_then_retrained
    cfg = _cfg(s['root'], s['wb'], 3, 'robust_delta_b')
    cfg.resume = True
    cfg.load_from = osp.join(s['wb'], 'iter_2.pth')
    runner = _train(cfg)
    assert runner.iter == 3
    meta = torch.load(osp.join(s['wb'], 'iter_3.pth'), weights_only=False)['meta'][DELTA_KEY]
    assert meta['base'] == osp.join(s['wb'], 'base_weights.pth')
    # frozen weights are still A's first ones, not the retrained A's
    sd = runner.model.state_dict()
    for k in meta['frozen_shapes']:
        assert torch.equal(sd[k], s['final'][k]), k


def test_version_1_delta_loads_with_a_warning(copied_then_retrained, tmp_path):
    s = copied_then_retrained
    delta = torch.load(osp.join(s['wb'], 'iter_2.pth'), map_location='cpu', weights_only=False)
    meta = delta['meta'][DELTA_KEY]
    del meta['base_hash']
    meta['version'] = 1
    meta['base'] = osp.join(s['wb'], 'base_weights.pth')
    torch.save(delta, tmp_path / 'old.pth')
    with _Records() as log:
        full = _load_checkpoint(str(tmp_path / 'old.pth'), map_location='cpu')
    for k, v in s['final'].items():
        assert torch.equal(full['state_dict'][k], v), k
    assert any('cannot verify' in m and meta['base'] in m for m in log.messages), log.messages


def test_tensor_hash_is_of_content_not_file():
    sd = {'b': torch.arange(6, dtype=torch.float32).reshape(2, 3), 'a': torch.tensor(1.5),
          'c': torch.zeros(0, 4)}
    h = tensor_hash(sd)
    assert h.startswith('sha256:')
    assert tensor_hash(dict(reversed(list(sd.items())))) == h  # key order
    assert tensor_hash({k: v.clone() for k, v in sd.items()}) == h  # other storage
    assert tensor_hash(dict(sd, b=sd['b'].t().contiguous().t())) == h  # other strides
    flipped = sd['b'].clone()
    flipped[1, 2] = 5.0000005
    assert tensor_hash(dict(sd, b=flipped)) != h
    assert tensor_hash(dict(sd, b=sd['b'].double())) != h  # dtype
    assert tensor_hash(dict(sd, b=sd['b'].reshape(3, 2))) != h  # shape, same bytes
    assert tensor_hash(dict(sd, d=torch.zeros(1))) != h  # one key more


def test_merge_refuses_to_overwrite_its_inputs(copied_then_retrained, tmp_path):
    s = copied_then_retrained
    from tools_import import merge_delta
    # copies: a regression must not destroy the shared work_dir
    delta, base = str(tmp_path / 'iter_2.pth'), str(tmp_path / 'base_weights.pth')
    shutil.copy(osp.join(s['wb'], 'iter_2.pth'), delta)
    shutil.copy(osp.join(s['wb'], 'base_weights.pth'), base)
    before = {p: open(p, 'rb').read() for p in (delta, base)}
    link = tmp_path / 'link.pth'
    os.symlink(delta, link)
    rel = osp.relpath(delta)
    for out, named in ((delta, delta), (rel, delta), (str(link), delta),
                       (base, base), (str(tmp_path / '.' / 'base_weights.pth'), base)):
        with pytest.raises(ValueError) as e:
            merge_delta.merge(delta, out)
        assert named in str(e.value) and 'another OUT' in str(e.value), out
    hard = tmp_path / 'hard_base.pth'
    os.link(base, hard)
    with pytest.raises(ValueError, match='another OUT'):
        merge_delta.merge(delta, str(hard), base=base)
    # symlinked delta as the input and the real file as OUT
    with pytest.raises(ValueError, match='another OUT'):
        merge_delta.merge(str(link), delta)
    assert {p: open(p, 'rb').read() for p in (delta, base)} == before


def test_missing_base_hint_is_the_real_command_line(copied_then_retrained, tmp_path):
    s = copied_then_retrained
    from tools_import import merge_delta
    delta = torch.load(osp.join(s['wb'], 'iter_2.pth'), map_location='cpu', weights_only=False)
    delta['meta'][DELTA_KEY]['base'] = str(tmp_path / 'gone' / 'base_weights_x.pth')
    path = tmp_path / 'my delta.pth'  # a space: the hint must quote it
    torch.save(delta, path)
    with pytest.raises(FileNotFoundError) as e:
        merge_delta.merge(str(path), str(tmp_path / 'o.pth'))
    msg = str(e.value)
    assert 'base_weights_x.pth' in msg
    hint = msg[msg.index('python '):]
    argv = shlex.split(hint)
    assert argv[1].endswith('tools/model_converters/merge_delta.py')
    args = merge_delta.build_parser().parse_args(argv[2:])
    assert args.delta == str(path) and args.base is not None and args.out != args.delta


class _NotATensor:
    """A pickled object a weights-only load refuses."""


def test_base_holding_objects_is_refused_naming_the_file(copied_then_retrained, tmp_path):
    s = copied_then_retrained
    from tools_import import merge_delta
    base = torch.load(osp.join(s['wb'], 'base_weights.pth'), weights_only=True)
    base['meta']['extra'] = _NotATensor()
    path = tmp_path / 'base_with_object.pth'
    torch.save(base, path)
    from mmpeft.utils.checkpoint_io import TRUSTED_ENV, UnsafeCheckpointError
    with pytest.raises(UnsafeCheckpointError) as e:
        merge_delta.merge(osp.join(s['wb'], 'iter_2.pth'), str(tmp_path / 'o.pth'), base=str(path))
    assert str(path) in str(e.value) and '_NotATensor' in str(e.value) and TRUSTED_ENV in str(e.value)
