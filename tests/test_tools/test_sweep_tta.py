"""tools/hst/sweep.sh's test-time-augmentation step (Table 5's +MS column), planned with DRY_RUN=1."""
import os
import os.path as osp
import subprocess

from mmpeft_testing import ROOT

FPN = 'fpn_vit-b_hst_80k_ade20k-512x512'


def sweep(*args, work_root: str, **env):
    env = dict(os.environ, WORK_ROOT=work_root, DRY_RUN='1', **env)
    return subprocess.run(['bash', osp.join(ROOT, 'tools', 'hst', 'sweep.sh'), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _commands(out: str, what: str):
    return [line.split() for line in out.splitlines() if line.startswith('+ ') and what in line]


def test_configs_with_a_tta_get_a_tta_test_resumable(tmp_path):
    wr = str(tmp_path / 'work')
    res = sweep('8', f'configs/hst/{FPN}', '1', work_root=wr)
    assert res.returncode == 0, res.stderr
    tests = _commands(res.stdout, 'tools/test.py')
    assert len(tests) == 2  # the plain test, then the TTA one
    plain, tta = tests
    assert '--tta' not in plain and plain[plain.index('--out') + 1] == f'{wr}/{FPN}/test_metrics.json'
    assert '--tta' in tta and tta[tta.index('--out') + 1] == f'{wr}/{FPN}/test_metrics_tta.json'
    assert tta[tta.index('--work-dir') + 1] == f'{wr}/{FPN}/test_tta'

    # tested already, TTA not yet: only the TTA test runs; both done: nothing
    os.makedirs(osp.join(wr, FPN))
    for name in ('train_done', 'test_metrics.json'):
        with open(osp.join(wr, FPN, name), 'w') as f:
            f.write(f'{wr}/{FPN}/iter_80000.pth' if name == 'train_done' else '{"mIoU": 45.0}')
    res = sweep('8', f'configs/hst/{FPN}', '1', work_root=wr)
    tests = _commands(res.stdout, 'tools/test.py')
    assert len(tests) == 1 and '--tta' in tests[0] and f'{wr}/{FPN}/iter_80000.pth' in tests[0]
    assert not _commands(res.stdout, 'tools/train.py')
    with open(osp.join(wr, FPN, 'test_metrics_tta.json'), 'w') as f:
        f.write('{"mIoU": 46.0}')
    res = sweep('8', f'configs/hst/{FPN}', '1', work_root=wr)
    assert not _commands(res.stdout, 'tools/') and f'[done]  {FPN}' in res.stdout


def test_tta_off_and_configs_without_one(tmp_path):
    wr = str(tmp_path / 'work')
    res = sweep('8', f'configs/hst/{FPN}', '1', work_root=wr, TTA='0')
    assert res.returncode == 0 and not any('--tta' in c for c in _commands(res.stdout, 'tools/test.py'))
    # a COCO detector has no TTA config here: one test
    res = sweep('8', 'configs/hst/mask-rcnn_vit-b_hst_1x_coco', '1', work_root=wr)
    assert res.returncode == 0, res.stderr
    assert len(_commands(res.stdout, 'tools/test.py')) == 1
